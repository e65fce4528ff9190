"""``DSDScorer``: image-text matching scores read from a text-conditioned diffusion UNet.

For every image against every text it returns three scores (higher = better match), each
averaged over a grid of timesteps:

* ``attention``: DSD's cross-attention score, the log-sum-exp of the cross-attention logits over
  the text tokens, averaged over heads, query pixels and the chosen layers
  (:mod:`.attention_capture`), read from the conditional UNet call;
* ``itm``: Diffusion-ITM's score ``-d_cond``, or ``d_uncond - d_cond`` with
  ``itm_unconditional_normalise`` (its image-retrieval variant), where
  ``d = ||eps - eps_theta(x_t, t, text)||_2`` over the whole latent and ``d_uncond`` uses the
  empty text ``""``;
* ``dsd``: DSD's sum ``attention + (d_uncond - d_cond)``.

The one rule: every candidate of a call sees the same noise at the same timestep (common random
numbers from ``noise_seed``, :mod:`.timesteps`) and, with ``reduction='per_sample'``, a pair's
scores depend only on its own image, text and the seed, never on the other candidates or on how
rows are batched. ``reduction='batch_mean_compat'`` reproduces a defect of the reference for
comparison only: its attention term is the mean over every row of the UNet batch (all pairs of the
call, conditional and unconditional halves), so every candidate gets the same attention term.

Noising: ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` with ``abar`` from the pipeline's
``alphas_cumprod``. This is what the reference feeds the UNet: its ``EulerDiscreteScheduler``'s
``add_noise`` gives ``x0 + sigma_t eps`` with ``sigma_t = sqrt((1 - abar_t) / abar_t)`` and
``scale_model_input`` divides by ``sqrt(sigma_t^2 + 1) = 1 / sqrt(abar_t)``. Epsilon-, v- and
sample-prediction UNets are compared in epsilon space (``eps = sqrt(abar) v + sqrt(1 - abar) x_t``
for v-prediction, as SD 2.1 768-v).

Batching: the rows ``(image, text, t)`` of the conditional calls and ``(image, t)`` of the
unconditional ones (the empty text does not depend on the candidate text, so it is run once per
image and timestep, not once per pair) are laid out flat and cut into chunks of ``max_batch``
rows, one UNet call per chunk. :meth:`DSDScorer.reference_score` runs the reference's loop
instead (one candidate and one timestep per UNet call, a batch of 2: unconditional, conditional)
and gives the same scores.

Gradients: there is no internal ``no_grad`` around the UNet, so trainable UNet parameters (LoRA
adapters) get gradients when grad is enabled (evaluate under ``torch.no_grad()``). The VAE and
the text encoder are frozen and run without grad, held outside the module tree; the UNet is a
submodule (so its adapters are parameters of the owner) with its own weights frozen at load, so
``state_dict()`` holds the UNet's weights: a trainer saves only its adapters. The capture processors stay
installed for the scorer's lifetime, which keeps gradient checkpointing's recomputation exact.
"""
import math

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS

from common.teachers.errors import TeacherConfigError
from common.teachers.frozen import FrozenTeacherBase
from common.teachers.loading import DiffusionComponents, load_diffusion_components
from .attention_capture import DEFAULT_LAYERS, CrossAttentionCapture
from .timesteps import latent_noise, shared_noise, timestep_grid

LATENT_MODES = ('sample', 'mean')
REDUCTIONS = ('per_sample', 'batch_mean_compat')
PREDICTION_TYPES = ('epsilon', 'v_prediction', 'sample')
DTYPES = dict(float32=torch.float32, float16=torch.float16, bfloat16=torch.bfloat16)
SCORE_KEYS = ('attention', 'itm', 'dsd')


def _dtype(dtype):
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype.replace('torch.', '') in DTYPES:
        return DTYPES[dtype.replace('torch.', '')]
    raise TeacherConfigError(f'DSDScorer dtype={dtype!r} is not one of {tuple(DTYPES)} (a string '
                             f'or the torch dtype).')


@MODELS.register_module()
class DSDScorer(FrozenTeacherBase):
    """DSD attention, Diffusion-ITM and DSD-sum scores of images against texts.

    Args:
        pretrained (str | None): a Stable Diffusion 1.x/2.x pipeline folder or hub id, or a
            pixel-space text-conditioned pipeline folder without ``vae/`` (``unet/`` with
            ``in_channels`` 1 or 3, ``text_encoder/``, ``tokenizer/``, ``scheduler/``): then
            the latent is the image itself.
        components (DiffusionComponents | None): already loaded components instead.
        layers (str | list[str]): ``'dsd_default'`` (the last cross-attention block of down /
            mid / up, see :mod:`.attention_capture`) or cross-attention module paths.
        num_timesteps (int): the reference's ``sampling_time_steps``; the grid is
            ``timestep_grid(num_timesteps, *timestep_range)`` (30: ``10, 43, ..., 967``).
        timestep_range (tuple[int, int]): ``(start, stop)`` of the grid, stop exclusive.
        noise_seed (int | None): seed of the common random noise (and of the VAE posterior draw
            of ``latent='sample'``); None draws fresh noise at every call (still shared by the
            candidates of that call).
        latent (str): ``'sample'`` (the reference: a posterior draw, seeded) or ``'mean'``.
        mask_padding (bool): leave padding tokens out of the attention log-sum-exp (the
            reference keeps them: False).
        reduction (str): ``'per_sample'`` or the reference's ``'batch_mean_compat'``.
        itm_unconditional_normalise (bool): ``itm = d_uncond - d_cond`` (Diffusion-ITM's image
            retrieval) instead of ``-d_cond``.
        max_batch (int): most rows per UNet call.
        image_size (int | tuple | None): resize images to this size (bilinear, antialiased)
            before encoding; None keeps the given size.
        dtype (torch.dtype | str): compute dtype of the networks (scores are float32).
        noise_schedule (dict | None): training noise schedule for a folder without
            ``scheduler/`` (see ``common.teachers.loading``).
    """

    def __init__(self,
                 pretrained=None,
                 components=None,
                 layers=DEFAULT_LAYERS,
                 num_timesteps=30,
                 timestep_range=(10, 990),
                 noise_seed=0,
                 latent='sample',
                 mask_padding=True,
                 reduction='per_sample',
                 itm_unconditional_normalise=False,
                 max_batch=32,
                 image_size=None,
                 dtype=torch.float32,
                 noise_schedule=None,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self._check_options(pretrained, components, latent, reduction, max_batch, noise_seed)
        self.compute_dtype = _dtype(dtype)
        if components is None:
            components = load_diffusion_components(pretrained, dtype=self.compute_dtype,
                                                   noise_schedule=noise_schedule)
        self.source = components.source or str(pretrained)
        self._check_components(components)
        for net in components.modules().values():
            if net is not None and any(p.dtype != self.compute_dtype for p in net.parameters()):
                net.to(dtype=self.compute_dtype)
        self.unet = components.unet.eval().requires_grad_(False)
        self._hold(vae=components.vae, text_encoder=components.text_encoders[0])
        self.tokenizer = components.tokenizers[0]
        self.noise_scheduler = components.noise_scheduler
        self.prediction_type = self.noise_scheduler.config.get('prediction_type', 'epsilon')
        if self.prediction_type not in PREDICTION_TYPES:
            raise TeacherConfigError(
                f'{self.source}: the scheduler says prediction_type={self.prediction_type!r}; '
                f'DSDScorer compares predictions in epsilon space and knows {PREDICTION_TYPES}.')
        self.alphas_cumprod = self.noise_scheduler.alphas_cumprod.float()
        self.num_train_timesteps = int(self.noise_scheduler.config.num_train_timesteps)
        start, stop = self._timestep_range(timestep_range)
        self.timesteps = timestep_grid(num_timesteps, start, stop,
                                       span=self.num_train_timesteps)
        self.noise_seed = noise_seed
        self.latent = latent
        self.reduction = reduction
        self.itm_unconditional_normalise = bool(itm_unconditional_normalise)
        self.max_batch = int(max_batch)
        self.image_size = self._check_image_size(image_size)
        self.capture = CrossAttentionCapture(self.unet, layers, mask_padding).install()
        self.layers = self.capture.layers
        self.mask_padding = self.capture.mask_padding
        self._uncond = None

    # ------------------------------------------------------------------ set-up
    @staticmethod
    def _check_options(pretrained, components, latent, reduction, max_batch, noise_seed):
        if (pretrained is None) == (components is None):
            raise TeacherConfigError(
                'DSDScorer needs exactly one of pretrained (a Stable Diffusion pipeline folder or '
                'hub id) and components (loaded DiffusionComponents); got '
                f'pretrained={pretrained!r} and components={type(components).__name__}.')
        if components is not None and not isinstance(components, DiffusionComponents):
            raise TeacherConfigError(f'DSDScorer components must be a DiffusionComponents, got '
                                     f'{type(components).__name__}.')
        for name, value, allowed in (('latent', latent, LATENT_MODES),
                                     ('reduction', reduction, REDUCTIONS)):
            if value not in allowed:
                raise TeacherConfigError(f'DSDScorer {name}={value!r} is not one of {allowed}.')
        if not isinstance(max_batch, int) or max_batch < 1:
            raise TeacherConfigError(f'DSDScorer max_batch={max_batch!r} must be an int >= 1 '
                                     f'(rows per UNet call).')
        if noise_seed is not None and (not isinstance(noise_seed, int) or noise_seed < 0):
            raise TeacherConfigError(f'DSDScorer noise_seed={noise_seed!r} must be a '
                                     f'non-negative int or None (fresh noise at every call).')

    def _check_components(self, parts):
        if not parts.is_text_conditioned or not parts.text_encoders or not parts.tokenizers:
            raise TeacherConfigError(
                f'{self.source}: DSDScorer needs a text-conditioned UNet (UNet2DConditionModel) '
                f'with its text_encoder/ and tokenizer/; this model has a '
                f'{type(parts.unet).__name__} and {len(parts.text_encoders)} text encoders. Use a '
                f'Stable Diffusion 1.x/2.x pipeline folder.')
        if parts.is_sdxl:
            raise TeacherConfigError(
                f'{self.source}: an SDXL pipeline (two text encoders) is not supported by '
                f'DSDScorer (its UNet needs pooled text embeddings and time ids); use a Stable '
                f'Diffusion 1.x/2.x pipeline such as stabilityai/stable-diffusion-2-1-base.')
        if parts.vae is None and parts.unet.config.in_channels not in (1, 3):
            raise TeacherConfigError(
                f'{self.source}: no VAE and a UNet with in_channels='
                f'{parts.unet.config.in_channels}; a pixel-space model takes 1- or 3-channel '
                f'images. Add the vae/ of the pipeline.')

    def _timestep_range(self, timestep_range):
        try:
            start, stop = (int(v) for v in timestep_range)
        except (TypeError, ValueError):
            start = stop = None
        if start is None or not 0 <= start < stop <= self.num_train_timesteps:
            raise TeacherConfigError(
                f'DSDScorer timestep_range={timestep_range!r} must be (start, stop) with '
                f'0 <= start < stop <= num_train_timesteps={self.num_train_timesteps}, e.g. '
                f'(10, 990) as the reference.')
        return start, stop

    @staticmethod
    def _check_image_size(image_size):
        if image_size is None:
            return None
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
            raise TeacherConfigError(f'DSDScorer image_size={image_size!r} must be None, an int '
                                     f'or (height, width) of positive ints.')
        return size

    @property
    def vae(self):
        return self.held_networks().get('vae')

    @property
    def text_encoder(self):
        return self.held_networks()['text_encoder']

    def _on_moved(self):
        self._uncond = None

    # ------------------------------------------------------------------ inputs
    def _check_images(self, images):
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] < 1 \
                or images.shape[1] not in (1, 3) or not images.is_floating_point():
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
            raise TeacherConfigError(
                f'DSDScorer images must be a float tensor (N, 3, H, W) in [-1, 1] with N >= 1, '
                f'got {shape}.')
        low, high = float(images.min()), float(images.max())
        if low < -1.01 or high > 1.01:
            raise TeacherConfigError(
                f'DSDScorer images must be in [-1, 1], got values in [{low:.3g}, {high:.3g}]; '
                f'map 0..255 pixels with x / 127.5 - 1 (or 0..1 with 2 x - 1).')

    def encode_images(self, images, noise_seed=None):
        """Latents ``x0`` (N, C, h, w) float32 of images (N, 3, H, W) in [-1, 1]: the VAE
        posterior mean, or a draw ``mean + std * z`` (``latent='sample'``; ``z`` from
        ``noise_seed``, shared by every image) times the VAE's scaling factor; for a
        pixel-space model the images themselves (a 1-channel model gets the channel mean)."""
        self._check_images(images)
        images = images.to(self.device, torch.float32)
        if self.image_size is not None and tuple(images.shape[-2:]) != self.image_size:
            images = F.interpolate(images, size=self.image_size, mode='bilinear',
                                   align_corners=False, antialias=True)
        if self.vae is None:
            if self.unet.config.in_channels == 1 and images.shape[1] == 3:
                images = images.mean(1, keepdim=True)
            if images.shape[1] != self.unet.config.in_channels:
                raise TeacherConfigError(
                    f'{self.source}: the pixel-space UNet takes {self.unet.config.in_channels}-'
                    f'channel images, got {images.shape[1]} channels.')
            return images
        with torch.no_grad():
            dist = self.vae.encode(images.to(self.compute_dtype)).latent_dist
        latents = dist.mean.float()
        if self.latent == 'sample':
            seed = self.noise_seed if noise_seed is None else noise_seed
            z = latent_noise(seed, latents.shape[1:]).to(latents.device)
            latents = latents + dist.std.float() * z
        shift = getattr(self.vae.config, 'shift_factor', None)
        if shift is not None:
            latents = latents - shift
        return latents * self.vae.config.scaling_factor

    def encode_texts(self, texts):
        """``(embeddings (N, L, D), mask (N, L) bool)``: the text encoder's last hidden state of
        each text padded to the tokenizer's ``model_max_length`` (truncated beyond), in the
        compute dtype, and the tokenizer's attention mask (True = a real token, padding False)."""
        texts = self._check_texts(texts)
        tokens = self.tokenizer(texts, padding='max_length', truncation=True,
                                max_length=self.tokenizer.model_max_length, return_tensors='pt')
        ids = tokens.input_ids.to(self.device)
        mask = tokens.attention_mask.to(self.device).bool()
        use_mask = getattr(self.text_encoder.config, 'use_attention_mask', False)
        with torch.no_grad():
            states = self.text_encoder(ids, attention_mask=mask.long() if use_mask else None)[0]
        return states.to(self.compute_dtype), mask

    @staticmethod
    def _check_texts(texts):
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, (list, tuple)) or not texts or \
                not all(isinstance(t, str) for t in texts):
            raise TeacherConfigError(f'DSDScorer texts must be a non-empty list of strings, got '
                                     f'{texts!r}.')
        return list(texts)

    def _unconditional(self):
        """``(embedding (1, L, D), mask (1, L))`` of the empty text, encoded once."""
        if self._uncond is None:
            self._uncond = self.encode_texts([''])
        return self._uncond

    def _timesteps(self, timesteps):
        if timesteps is None:
            return list(self.timesteps)
        values = [timesteps] if isinstance(timesteps, int) else \
            [int(t) for t in torch.as_tensor(timesteps).reshape(-1).tolist()]
        bad = [t for t in values if not 0 <= t < self.num_train_timesteps]
        if bad or not values:
            raise TeacherConfigError(
                f'DSDScorer timesteps {bad or values} are outside 0..'
                f'{self.num_train_timesteps - 1} (the scheduler has num_train_timesteps='
                f'{self.num_train_timesteps}).')
        return values

    def _noise(self, seed, timesteps, shape):
        """(K, C, h, w) common random noise, one latent per timestep (``seed`` None: fresh)."""
        return torch.stack([shared_noise(seed, t, shape) for t in timesteps]).to(self.device)

    # ------------------------------------------------------------------ the UNet
    def _to_epsilon(self, prediction, x_t, sqrt_abar, sqrt_one_minus):
        if self.prediction_type == 'epsilon':
            return prediction
        if self.prediction_type == 'v_prediction':
            return sqrt_abar * prediction + sqrt_one_minus * x_t
        return (x_t - sqrt_abar * prediction) / sqrt_one_minus  # 'sample'

    def _unet_rows(self, x0, noise, timesteps, states, masks, rows, maps=False):
        """Run ``rows`` (R, 3) long ``(image, text, timestep index)`` in chunks of ``max_batch``
        rows, one UNet call per chunk.

        Returns ``(d (R,), attention (R,), maps {layer: (R, pixels)} | None)`` where
        ``d = ||eps - eps_theta||_2`` of each row.
        """
        chunks = [self._unet_chunk(x0, noise, timesteps, states, masks, rows[s:s + self.max_batch],
                                   maps) for s in range(0, rows.shape[0], self.max_batch)]
        layer_maps = {n: torch.cat([c[2][n] for c in chunks]) for n in self.layers} \
            if maps else None
        return torch.cat([c[0] for c in chunks]), torch.cat([c[1] for c in chunks]), layer_maps

    def _unet_chunk(self, x0, noise, timesteps, states, masks, rows, maps=False):
        """One UNet call on ``rows`` (B, 3): ``(d (B,), attention (B,), maps | None)``."""
        device = x0.device
        i, j, k = rows.to(device).unbind(1)
        t_values = torch.tensor(timesteps, device=device, dtype=torch.long)[k]
        abar = self.alphas_cumprod.to(device)[t_values]
        a = abar.sqrt().view(-1, 1, 1, 1)
        s = (1 - abar).sqrt().view(-1, 1, 1, 1)
        eps = noise[k]
        x_t = a * x0[i] + s * eps
        context = states[j]
        self.capture.clear()
        self.capture.set_token_mask(context, masks[j])
        prediction = self.unet(x_t.to(self.compute_dtype), t_values,
                               encoder_hidden_states=context, return_dict=False)[0]
        eps_pred = self._to_epsilon(prediction.float(), x_t, a, s)
        d = (eps - eps_pred).flatten(1).norm(dim=1)
        attention = self.capture.row_scores().float()
        layer_maps = self.capture.row_maps() if maps else None
        self.capture.clear()
        return d, attention, layer_maps

    @staticmethod
    def _grid(*sizes):
        """All index tuples of a grid of ``sizes`` as a (prod, len(sizes)) long tensor."""
        axes = torch.meshgrid(*[torch.arange(n) for n in sizes], indexing='ij')
        return torch.stack([a.reshape(-1) for a in axes], dim=1)

    # ------------------------------------------------------------------ scores
    def _combine(self, d_cond, d_uncond, att_cond, att_uncond):
        """Scores (I, T) from per-timestep terms: d_cond / att_cond (I, T, K), d_uncond /
        att_uncond (I, K)."""
        n_img, n_txt = d_cond.shape[:2]
        if self.reduction == 'per_sample':
            attention = att_cond.mean(-1)
        else:  # the reference: one mean over every row of the call, per timestep
            per_t = (att_cond.sum((0, 1)) + n_txt * att_uncond.sum(0)) / (2 * n_img * n_txt)
            attention = per_t.mean().expand(n_img, n_txt)
        gain = (d_uncond[:, None, :] - d_cond).mean(-1)
        itm = gain if self.itm_unconditional_normalise else -d_cond.mean(-1)
        return dict(attention=attention, itm=itm, dsd=attention + gain)

    def score(self, images, texts, timesteps=None, noise_seed=None):
        """Scores of every image against every text.

        Args:
            images (Tensor): (I, 3, H, W) float in [-1, 1].
            texts (list[str]): T texts.
            timesteps (list[int] | None): overrides the grid (training passes one random t).
            noise_seed (int | None): overrides the scorer's seed for this call.

        Returns:
            dict: ``attention``, ``itm`` and ``dsd``, each (I, T) float32, higher = better.
        """
        timesteps = self._timesteps(timesteps)
        seed = self.noise_seed if noise_seed is None else noise_seed
        x0 = self.encode_images(images, seed)
        cond, cond_mask = self.encode_texts(texts)
        uncond, uncond_mask = self._unconditional()
        n_img, n_txt, n_t = x0.shape[0], cond.shape[0], len(timesteps)
        noise = self._noise(seed, timesteps, x0.shape[1:])
        states = torch.cat([cond, uncond])
        masks = torch.cat([cond_mask, uncond_mask])
        cond_rows = self._grid(n_img, n_txt, n_t)
        uncond_rows = self._grid(n_img, 1, n_t)
        uncond_rows[:, 1] = n_txt  # the empty text's row of ``states``
        d, att, _ = self._unet_rows(x0, noise, timesteps, states, masks,
                                    torch.cat([cond_rows, uncond_rows]))
        n_cond = cond_rows.shape[0]
        return self._combine(d[:n_cond].view(n_img, n_txt, n_t), d[n_cond:].view(n_img, n_t),
                             att[:n_cond].view(n_img, n_txt, n_t), att[n_cond:].view(n_img, n_t))

    forward = score

    def reference_score(self, images, texts, timesteps=None, noise_seed=None):
        """:meth:`score` by the reference's loop: for each (image, text) pair and each timestep
        one UNet call on a batch of 2 (the empty text, the text). Same scores as :meth:`score`
        (with ``'batch_mean_compat'`` the attention term is the mean of those 2 rows, the
        reference with a batch of one pair). For benchmarks and checks."""
        timesteps = self._timesteps(timesteps)
        seed = self.noise_seed if noise_seed is None else noise_seed
        x0 = self.encode_images(images, seed)
        cond, cond_mask = self.encode_texts(texts)
        uncond, uncond_mask = self._unconditional()
        noise = self._noise(seed, timesteps, x0.shape[1:])
        n_img, n_txt, n_t = x0.shape[0], cond.shape[0], len(timesteps)
        out = {key: torch.zeros(n_img, n_txt, device=x0.device) for key in SCORE_KEYS}
        for i in range(n_img):
            for j in range(n_txt):
                states = torch.cat([uncond, cond[j:j + 1]])
                masks = torch.cat([uncond_mask, cond_mask[j:j + 1]])
                terms = {key: 0.0 for key in SCORE_KEYS}
                for k in range(n_t):
                    rows = torch.tensor([[i, 0, k], [i, 1, k]])
                    d, att, _ = self._unet_chunk(x0, noise, timesteps, states, masks, rows)
                    attention = att[1] if self.reduction == 'per_sample' else att.mean()
                    gain = d[0] - d[1]
                    terms['attention'] = terms['attention'] + attention
                    terms['itm'] = terms['itm'] + (gain if self.itm_unconditional_normalise
                                                   else -d[1])
                    terms['dsd'] = terms['dsd'] + attention + gain
                for key in SCORE_KEYS:
                    out[key][i, j] = terms[key] / n_t
        return out

    # ------------------------------------------------------------------ heat maps
    @staticmethod
    def _layer_map(values, latent_hw, out_hw):
        """(B, pixels) of one layer -> (B, H, W) upsampled bilinearly to ``out_hw``."""
        pixels = values.shape[1]
        factor = math.sqrt(latent_hw[0] * latent_hw[1] / pixels)
        h = max(1, round(latent_hw[0] / factor))
        w = pixels // h
        if h * w != pixels:
            raise TeacherConfigError(f'cannot lay out {pixels} attention queries on a grid of '
                                     f'the latent aspect {latent_hw}.')
        grid = values.view(-1, 1, h, w)
        return F.interpolate(grid, size=out_hw, mode='bilinear', align_corners=False)[:, 0]

    @torch.no_grad()
    def attention_maps(self, image, texts, timesteps=None, noise_seed=None):
        """Cross-attention heat maps (T, H, W) of one image (3, H, W) for each text.

        A map is the share of the cross-attention (softmax over all tokens, as the UNet
        attends) that lands on the text's word tokens (not padding, not the start and end
        tokens), averaged over heads, upsampled bilinearly from each chosen layer's resolution
        to the image's ``H x W``, then averaged over the layers and the timesteps of the grid
        (conditional calls only). Values lie in [0, 1]; an empty text gives a zero map.
        """
        if not isinstance(image, torch.Tensor) or image.dim() != 3:
            raise TeacherConfigError(f'attention_maps takes one image (3, H, W), got '
                                     f'{tuple(getattr(image, "shape", ())) or type(image)}.')
        timesteps = self._timesteps(timesteps)
        seed = self.noise_seed if noise_seed is None else noise_seed
        x0 = self.encode_images(image[None], seed)
        cond, cond_mask = self.encode_texts(texts)
        noise = self._noise(seed, timesteps, x0.shape[1:])
        n_txt, n_t = cond.shape[0], len(timesteps)
        self.capture.record_maps = True
        try:
            _, _, maps = self._unet_rows(x0, noise, timesteps, cond, cond_mask,
                                         self._grid(1, n_txt, n_t), maps=True)
        finally:
            self.capture.record_maps = False
        out_hw = tuple(image.shape[-2:])
        upsampled = [self._layer_map(m.float(), x0.shape[-2:], out_hw) for m in maps.values()]
        return torch.stack(upsampled).mean(0).view(n_txt, n_t, *out_hw).mean(1)

    def extra_repr(self):
        fields = dict(source=self.source, layers=len(self.layers), timesteps=len(self.timesteps),
                      latent=self.latent, reduction=self.reduction,
                      mask_padding=self.mask_padding)
        return ', '.join(f'{k}={v!r}' for k, v in fields.items())

