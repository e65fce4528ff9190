"""``TextDDPMTrainer``: train a small text-conditioned pixel DDPM (the offline demo's "Stable
Diffusion") as an mmengine model.

What it trains: a diffusers ``UNet2DConditionModel`` on the images' pixels (no VAE) with
cross-attention on a small ``transformers`` ``CLIPTextModel`` reading a word-level tokenizer
(``tokenizer.py``), jointly or with the text encoder frozen at its random init. The loss is
``DDPMTrainer``'s epsilon objective with the caption as condition:
``mse(unet(x_t, t, text(caption)), eps)``; with probability ``caption_dropout`` a caption is
replaced by ``""`` so that the unconditional embedding means "no text" (Diffusion-ITM's
unconditional term and classifier-free guidance need it).

The one rule: the text is encoded exactly as the image-text scorer encodes it (``input_ids``
padded to ``model_max_length``, no attention mask, the last hidden state), so the trained UNet is
scored in the conditions it was trained in. EMA copies of both networks are updated after every
optimizer step in :meth:`train_step` and are what :meth:`export_pipeline` hands out (a
``PixelTextPipeline``: ``unet/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``, no ``vae/``),
written after training by ``ExportDiffusersPipelineHook`` (set its ``num_samples=0``: its sample
grid is for unconditional UNets; ``tools/demo_itm.py`` draws captioned samples itself).
"""
import copy
import logging

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model import BaseModel
from mmengine.registry import MODELS

from .tokenizer import build_word_tokenizer, text_encoder_ids

DEFAULT_PREPROCESSOR = dict(type='ImgDataPreprocessor', mean=[127.5] * 3, std=[127.5] * 3)


def _caption_of(sample):
    caption = sample.get('caption') if hasattr(sample, 'get') else None
    if caption is None:
        raise KeyError('TextDDPMTrainer: a data sample has no `caption`; the dataset must give '
                       'one per image (CaptionedDigitsDataset does) and the pipeline must pack '
                       "it: PackInputs(algorithm_keys=('caption', )).")
    return str(caption)


@MODELS.register_module()
class TextDDPMTrainer(BaseModel):
    """A text-conditioned pixel DDPM in training (see the module docstring).

    Args:
        unet (dict): ``diffusers.UNet2DConditionModel`` keyword arguments;
            ``cross_attention_dim`` defaults to the text encoder's ``hidden_size``.
        text_encoder (dict): ``transformers.CLIPTextConfig`` keyword arguments; the vocabulary
            size and the pad/bos/eos ids come from the tokenizer.
        captions (list[str]): every caption of the data: the tokenizer's vocabulary is their
            words (``build_word_tokenizer``).
        model_max_length (int): the tokenizer's padded length.
        scheduler (dict | None): ``diffusers.DDPMScheduler`` arguments (default: 1000-step
            linear); epsilon prediction only.
        caption_dropout (float): probability of training on ``""`` instead of the caption.
        train_text_encoder (bool): train the text encoder jointly (False: frozen random init).
        ema_decay (float | None), ema_warmup (bool): as ``DDPMTrainer`` (both networks).
        data_preprocessor (dict | None): must map 0..255 images to [-1, 1] (the default does).
    """

    def __init__(self,
                 unet,
                 text_encoder,
                 captions,
                 model_max_length=8,
                 scheduler=None,
                 caption_dropout=0.1,
                 train_text_encoder=True,
                 ema_decay=0.995,
                 ema_warmup=True,
                 data_preprocessor=None,
                 init_cfg=None):
        from diffusers import DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel
        super().__init__(data_preprocessor=data_preprocessor or dict(DEFAULT_PREPROCESSOR),
                         init_cfg=init_cfg)
        if not 0.0 <= float(caption_dropout) < 1.0:
            raise ValueError(f'caption_dropout={caption_dropout} must be in [0, 1) (the share of '
                             f'training images seen with the empty caption).')
        self.tokenizer = build_word_tokenizer(list(captions), model_max_length)
        text_cfg = dict(text_encoder)
        text_cfg.update(text_encoder_ids(self.tokenizer))
        text_cfg.setdefault('max_position_embeddings', int(model_max_length))
        if text_cfg['max_position_embeddings'] < int(model_max_length):
            raise ValueError(f"text_encoder max_position_embeddings="
                             f"{text_cfg['max_position_embeddings']} is shorter than "
                             f'model_max_length={model_max_length}; raise it or shorten the '
                             f'captions.')
        self.text_encoder = CLIPTextModel(CLIPTextConfig(**text_cfg))
        unet_cfg = dict(unet)
        unet_cfg.setdefault('cross_attention_dim', text_cfg['hidden_size'])
        if unet_cfg['cross_attention_dim'] != text_cfg['hidden_size']:
            raise ValueError(f"unet cross_attention_dim={unet_cfg['cross_attention_dim']} must "
                             f"equal the text encoder's hidden_size={text_cfg['hidden_size']} "
                             f'(the UNet attends to its hidden states); drop the unet key to '
                             f'use the hidden size.')
        self.unet = UNet2DConditionModel(**unet_cfg)
        self.noise_scheduler = DDPMScheduler(**(scheduler or dict(num_train_timesteps=1000)))
        if self.noise_scheduler.config.prediction_type != 'epsilon':
            raise ValueError(f"TextDDPMTrainer trains prediction_type='epsilon' only; the "
                             f'scheduler config says '
                             f'{self.noise_scheduler.config.prediction_type!r}.')
        self.caption_dropout = float(caption_dropout)
        self.train_text_encoder = bool(train_text_encoder)
        if not self.train_text_encoder:
            self.text_encoder.requires_grad_(False)
        if ema_decay is not None and not 0.0 < float(ema_decay) < 1.0:
            raise ValueError(f'ema_decay must be in (0, 1) or None, got {ema_decay}.')
        self.ema_decay = None if ema_decay is None else float(ema_decay)
        self.ema_warmup = bool(ema_warmup)
        if self.ema_decay is not None:
            self.ema = copy.deepcopy(self.networks()).requires_grad_(False).eval()
            self.register_buffer('ema_steps', torch.zeros((), dtype=torch.long))
        else:
            self.ema = None

    def networks(self):
        """The trained networks as one ``ModuleDict`` (the EMA mirrors it)."""
        return torch.nn.ModuleDict(dict(unet=self.unet, text_encoder=self.text_encoder))

    @property
    def num_train_timesteps(self):
        return int(self.noise_scheduler.config.num_train_timesteps)

    def train(self, mode=True):
        super().train(mode)
        if self.ema is not None:
            self.ema.eval()
        return self

    # ------------------------------------------------------------------ the objective
    def encode_text(self, captions, text_encoder=None):
        """``(N, L, D)`` text embeddings, as the scorer computes them (module docstring)."""
        tokens = self.tokenizer(list(captions), padding='max_length', truncation=True,
                                max_length=self.tokenizer.model_max_length, return_tensors='pt')
        encoder = text_encoder if text_encoder is not None else self.text_encoder
        return encoder(tokens.input_ids.to(self.unet.device), return_dict=False)[0]

    def drop_captions(self, captions):
        """Each caption replaced by ``""`` with probability ``caption_dropout``."""
        if not self.training or self.caption_dropout == 0.0:
            return list(captions)
        drop = torch.rand(len(captions)) < self.caption_dropout
        return ['' if d else c for c, d in zip(captions, drop.tolist())]

    def loss(self, inputs, data_samples):
        captions = self.drop_captions([_caption_of(s) for s in data_samples])
        with torch.set_grad_enabled(self.train_text_encoder and torch.is_grad_enabled()):
            text = self.encode_text(captions)
        eps = torch.randn_like(inputs)
        t = torch.randint(0, self.num_train_timesteps, (inputs.shape[0], ), device=inputs.device)
        x_t = self.noise_scheduler.add_noise(inputs, eps, t)
        pred = self.unet(x_t, t, encoder_hidden_states=text, return_dict=False)[0]
        return dict(loss=F.mse_loss(pred.float(), eps.float()))

    def forward(self, inputs, data_samples=None, mode='tensor'):
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            # a generative model predicts nothing: samples pass through (a stray val loop is
            # harmless)
            return list(data_samples) if data_samples is not None else []
        raise ValueError(f"TextDDPMTrainer: mode {mode!r} is not supported ('loss' for "
                         f"training, 'predict' passes samples through).")

    # ------------------------------------------------------------------ EMA
    def train_step(self, data, optim_wrapper):
        log_vars = super().train_step(data, optim_wrapper)
        if self.ema is not None:
            self.update_ema()
        return log_vars

    @torch.no_grad()
    def update_ema(self):
        """One EMA step of both networks (the first one copies them)."""
        n = int(self.ema_steps)
        decay = min(self.ema_decay, (1 + n) / (10 + n)) if self.ema_warmup else self.ema_decay
        if n == 0:
            decay = 0.0
        live = self.networks()
        for ema, param in zip(self.ema.parameters(), live.parameters()):
            ema.lerp_(param.detach().to(ema.dtype), 1.0 - decay)
        for ema, buf in zip(self.ema.buffers(), live.buffers()):
            ema.copy_(buf)
        self.ema_steps += 1

    # ------------------------------------------------------------------ export
    def export_networks(self):
        """Detached eval-mode copies of ``(unet, text_encoder)``: the EMA ones when EMA is on
        and was updated."""
        source = self.networks()
        if self.ema is not None:
            if int(self.ema_steps) > 0:
                source = self.ema
            else:
                print_log('TextDDPMTrainer: EMA is on but was never updated; exporting the raw '
                          'weights.', logger='current', level=logging.WARNING)
        copied = copy.deepcopy(source).requires_grad_(False).eval().cpu()
        return copied['unet'], copied['text_encoder']

    def export_pipeline(self):
        """The trained model as a :class:`PixelTextPipeline` (save it with save_pretrained)."""
        from diffusers import DDPMScheduler

        from .pipeline import PixelTextPipeline
        unet, text_encoder = self.export_networks()
        return PixelTextPipeline(unet=unet, text_encoder=text_encoder,
                                 tokenizer=copy.deepcopy(self.tokenizer),
                                 scheduler=DDPMScheduler.from_config(self.noise_scheduler.config))
