"""SongUNet: the DDPM++ / NCSN++ U-Net of Song et al. (2021) as used by EDM (Karras et al. 2022).

The one rule: the module tree mirrors NVlabs/edm's ``SongUNet`` name for name, so the
``state_dict()`` of this class has exactly the keys of EDM's released networks (``map_noise``,
``map_label``, ``map_augment``, ``map_layer0``/``1``, ``enc.<R>x<R>_conv|_down|_block<i>|_aux_*``,
``dec.<R>x<R>_in0|_in1|_up|_block<i>|_aux_up|_aux_norm|_aux_conv``), and the order of entries in
``enc``/``dec`` is the order of computation. Rename nothing; add no parameter.

Presets (EDM paper, appendix F / Table 7): DDPM++ = ``embedding_type='positional',
channel_mult_noise=1, encoder_type='standard', decoder_type='standard', resample_filter=[1,1]``;
NCSN++ = ``'fourier', 2, 'residual', 'standard', [1,3,3,1]``. The CIFAR-10 networks use
``model_channels=128, channel_mult=[2,2,2], num_blocks=4, attn_resolutions=[16]``.
"""
import math

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS

from .layers import Conv2d, FourierEmbedding, GroupNorm, Linear, PositionalEmbedding, UNetBlock

EMBEDDING_TYPES = ('positional', 'fourier')
ENCODER_TYPES = ('standard', 'skip', 'residual')
DECODER_TYPES = ('standard', 'skip')


def check_choice(value, choices, option, network):
    """Raise a one-paragraph ValueError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(
            f'{network} got {option}={value!r}, which is not supported: expected one of '
            f'{", ".join(repr(c) for c in choices)}. Fix {option} in the network configuration.')


def check_resolution(img_resolution, levels, network):
    """Raise unless ``img_resolution`` halves cleanly ``levels - 1`` times."""
    if img_resolution < 1 or img_resolution % (1 << (levels - 1)):
        raise ValueError(
            f'{network} cannot work at img_resolution={img_resolution} with {levels} resolution '
            f'levels (len(channel_mult)): each level halves the image, so the resolution must be '
            f'a positive multiple of {1 << (levels - 1)}. Change img_resolution or channel_mult.')


def label_input(class_labels, label_dim, batch, training, label_dropout, device):
    """Class labels as given, with EDM's per-sample label dropout in training."""
    if class_labels is None:
        class_labels = torch.zeros(1, label_dim, device=device)
    if training and label_dropout:
        keep = (torch.rand(batch, 1, device=device) >= label_dropout).to(class_labels.dtype)
        class_labels = class_labels * keep
    return class_labels


@MODELS.register_module()
class SongUNet(torch.nn.Module):
    """DDPM++ / NCSN++ network ``F(x, noise_labels, class_labels, augment_labels)``, x-shaped."""

    def __init__(self, img_resolution, in_channels, out_channels, label_dim=0, augment_dim=0,
                 model_channels=128, channel_mult=(1, 2, 2, 2), channel_mult_emb=4, num_blocks=4,
                 attn_resolutions=(16, ), dropout=0.10, label_dropout=0,
                 embedding_type='positional', channel_mult_noise=1, encoder_type='standard',
                 decoder_type='standard', resample_filter=(1, 1)):
        super().__init__()
        check_choice(embedding_type, EMBEDDING_TYPES, 'embedding_type', 'SongUNet')
        check_choice(encoder_type, ENCODER_TYPES, 'encoder_type', 'SongUNet')
        check_choice(decoder_type, DECODER_TYPES, 'decoder_type', 'SongUNet')
        channel_mult = list(channel_mult)
        check_resolution(img_resolution, len(channel_mult), 'SongUNet')
        self.img_resolution = img_resolution
        self.label_dropout = label_dropout
        emb_channels = model_channels * channel_mult_emb
        noise_channels = model_channels * channel_mult_noise
        init = dict(init_mode='xavier_uniform')
        init_zero = dict(init_mode='xavier_uniform', init_weight=1e-5)
        init_attn = dict(init_mode='xavier_uniform', init_weight=math.sqrt(0.2))
        block = dict(emb_channels=emb_channels, num_heads=1, dropout=dropout,
                     skip_scale=math.sqrt(0.5), eps=1e-6, resample_filter=resample_filter,
                     resample_proj=True, adaptive_scale=False, init=init, init_zero=init_zero,
                     init_attn=init_attn)

        # Mapping network: noise level (+ class, + augmentation) -> embedding.
        if embedding_type == 'positional':
            self.map_noise = PositionalEmbedding(noise_channels, endpoint=True)
        else:
            self.map_noise = FourierEmbedding(noise_channels)
        self.map_label = Linear(label_dim, noise_channels, **init) if label_dim else None
        self.map_augment = (Linear(augment_dim, noise_channels, bias=False, **init)
                            if augment_dim else None)
        self.map_layer0 = Linear(noise_channels, emb_channels, **init)
        self.map_layer1 = Linear(emb_channels, emb_channels, **init)

        # Encoder. ``aux`` entries carry the downsampled input image (skip / residual encoders).
        self.enc = torch.nn.ModuleDict()
        channels = in_channels
        aux_channels = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            tag = f'{res}x{res}'
            if level == 0:
                self.enc[f'{tag}_conv'] = Conv2d(channels, model_channels, kernel=3, **init)
                channels = model_channels
            else:
                self.enc[f'{tag}_down'] = UNetBlock(channels, channels, down=True, **block)
                if encoder_type == 'skip':
                    self.enc[f'{tag}_aux_down'] = Conv2d(aux_channels, aux_channels, kernel=0,
                                                         down=True, resample_filter=resample_filter)
                    self.enc[f'{tag}_aux_skip'] = Conv2d(aux_channels, channels, kernel=1, **init)
                if encoder_type == 'residual':
                    self.enc[f'{tag}_aux_residual'] = Conv2d(
                        aux_channels, channels, kernel=3, down=True,
                        resample_filter=resample_filter, fused_resample=True, **init)
                    aux_channels = channels
            for idx in range(num_blocks):
                self.enc[f'{tag}_block{idx}'] = UNetBlock(
                    channels, model_channels * mult, attention=res in attn_resolutions, **block)
                channels = model_channels * mult
        skips = [m.out_channels for name, m in self.enc.items() if 'aux' not in name]

        # Decoder. Every non-aux block that needs more input channels consumes one skip.
        self.dec = torch.nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            tag = f'{res}x{res}'
            if level == len(channel_mult) - 1:
                self.dec[f'{tag}_in0'] = UNetBlock(channels, channels, attention=True, **block)
                self.dec[f'{tag}_in1'] = UNetBlock(channels, channels, **block)
            else:
                self.dec[f'{tag}_up'] = UNetBlock(channels, channels, up=True, **block)
            for idx in range(num_blocks + 1):
                cin = channels + skips.pop()
                channels = model_channels * mult
                self.dec[f'{tag}_block{idx}'] = UNetBlock(
                    cin, channels, attention=(idx == num_blocks and res in attn_resolutions),
                    **block)
            if decoder_type == 'skip' or level == 0:
                if decoder_type == 'skip' and level < len(channel_mult) - 1:
                    self.dec[f'{tag}_aux_up'] = Conv2d(out_channels, out_channels, kernel=0,
                                                       up=True, resample_filter=resample_filter)
                self.dec[f'{tag}_aux_norm'] = GroupNorm(channels, eps=1e-6)
                self.dec[f'{tag}_aux_conv'] = Conv2d(channels, out_channels, kernel=3, **init_zero)

    def embed(self, noise_labels, class_labels, augment_labels, batch, device):
        """The conditioning vector fed to every block (positional features swapped to sin, cos)."""
        emb = self.map_noise(noise_labels)
        emb = torch.cat(emb.chunk(2, dim=1)[::-1], dim=1)
        if self.map_label is not None:
            labels = label_input(class_labels, self.map_label.in_features, batch, self.training,
                                 self.label_dropout, device)
            emb = emb + self.map_label(labels * math.sqrt(self.map_label.in_features))
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        emb = F.silu(self.map_layer0(emb))
        return F.silu(self.map_layer1(emb))

    def forward(self, x, noise_labels, class_labels=None, augment_labels=None):
        emb = self.embed(noise_labels, class_labels, augment_labels, x.shape[0], x.device)

        skips = []
        aux = x
        for name, module in self.enc.items():
            if 'aux_down' in name:
                aux = module(aux)
            elif 'aux_skip' in name:
                x = skips[-1] = x + module(aux)
            elif 'aux_residual' in name:
                x = skips[-1] = aux = (x + module(aux)) / math.sqrt(2)
            else:
                x = module(x, emb) if isinstance(module, UNetBlock) else module(x)
                skips.append(x)

        out = None
        normed = None
        for name, module in self.dec.items():
            if 'aux_up' in name:
                out = module(out)
            elif 'aux_norm' in name:
                normed = module(x)
            elif 'aux_conv' in name:
                image = module(F.silu(normed))
                out = image if out is None else image + out
            else:
                if x.shape[1] != module.in_channels:
                    x = torch.cat([x, skips.pop()], dim=1)
                x = module(x, emb)
        return out
