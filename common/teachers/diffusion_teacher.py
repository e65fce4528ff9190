"""``DiffusionTeacher``: a frozen diffusion UNet that returns named features at chosen timesteps.

``teacher(images)`` takes images in [-1, 1] (or normalised as ``input_norm`` says) and returns
``{'{layer}@{t}': tensor [B, C, H, W]}``. All timesteps and ensemble members of a batch run as one
batched UNet call (``max_batch_size`` splits it when memory is short), features are captured by
forward hooks and the forward stops after the last requested module.

The diffusion model is held outside the module tree: its weights never appear in
``state_dict()`` or ``parameters()`` (so never in a student checkpoint or an optimizer), and it
follows the owner's ``.to(device)`` while keeping its configured dtype.

With a ``seed`` every random draw (forward noise, and the VAE posterior sample of
``latent='sample'``) comes from generators seeded by it and shared by every image, so a feature
depends only on its own image; the feature cache's key covers every setting that changes a
feature (:meth:`DiffusionTeacher.cache_settings`).

Text-conditioned teachers use the configured ``prompt`` unless a call passes ``prompts`` (one
string per image, e.g. DIFT's ``'a photo of a {category}'``); each distinct prompt is encoded once
and kept for the teacher's lifetime (SDXL's pooled text embedding follows the prompt too).
"""
import dataclasses
import logging

import torch
from mmengine.logging import print_log
from mmengine.registry import MODELS

from .errors import TeacherConfigError
from .feature_cache import FeatureCache, make_key, module_fingerprint, tensor_digest
from ..feature_hooks import FeatureRecorder, resolve_modules
from .frozen import FrozenTeacherBase
from .loading import (DiffusionComponents, check_noise_schedule, load_diffusion_components,
                      noise_scheduler_from_config)

DTYPES = dict(float32=torch.float32, float16=torch.float16, bfloat16=torch.bfloat16)
NOISE_MODES = ('forward', 'none')
LATENT_MODES = ('mean', 'sample')
# The VAE posterior draws of latent='sample' use their own stream, seeded with seed + this offset,
# so they never coincide with the forward noise drawn from seed itself.
LATENT_SEED_OFFSET = 0x5EED
# Bump when the way features are computed changes: old cache entries then never match.
CACHE_FORMAT_VERSION = 2


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


@MODELS.register_module()
class DiffusionTeacher(FrozenTeacherBase):
    """A frozen diffusion model used as a feature extractor.

    Args:
        pretrained (str | DiffusionComponents): a diffusers pipeline folder or hub id (pixel
            DDPM: ``unet/`` + ``scheduler/``; Stable Diffusion 1.x/2.x/XL: also ``vae/``,
            ``text_encoder(_2)/``, ``tokenizer(_2)/``), or a bare ``UNet2DModel`` folder (with
            ``noise_schedule``); or components already in memory (benchmarks).
        layers (list[str]): module paths inside the UNet, e.g. ``'mid_block.resnets.1.conv2'``.
        timesteps (list[int]): diffusion timesteps, each in ``[0, num_train_timesteps)``.
        noise (str): ``'forward'``: ``x_t = scheduler.add_noise(x0, eps, t)`` (the papers);
            ``'none'``: the clean ``x0`` is fed with ``t`` (the released RepFusion code).
        ensemble (int): noise draws averaged per image (DIFT uses 8).
        seed (int | None): when set, the ensemble's noise is drawn once from this seed and shared
            by every image and timestep (deterministic features, as SD-DINO/ddpm-segmentation);
            so are the posterior draws of ``latent='sample'`` (from ``seed + LATENT_SEED_OFFSET``).
        prompt (str): text for text-conditioned UNets; encoded once and cached. The default
            for every image; a call's ``prompts`` (one per image) override it.
        dtype (str): ``'float32'``, ``'float16'`` or ``'bfloat16'``. Features are returned as
            float32 whatever the compute dtype.
        latent (str): latent models encode with the VAE's posterior ``'mean'``, or ``'sample'``:
            ``mean + std * eps`` with one ``eps`` per ensemble member (each noisy copy has its own
            posterior draw, as DIFT's batch of copies; the VAE still runs once per image).
        input_norm (dict | None): ``dict(mean=[...], std=[...])`` in 0-255 units when the images
            given are normalised that way (as by a data preprocessor); undone to [-1, 1].
        class_label (int | None): label fed to class-conditional UNets when none is passed.
        max_batch_size (int | None): largest UNet batch (timesteps x ensemble x images) per call.
        cache_dir (str | None): on-disk feature cache; needs deterministic features
            (``noise='none'`` or a ``seed``; a ``seed`` as well for ``latent='sample'``). It
            only hits when the exact same input tensor comes again: useless with random
            augmentation (see ``common.teachers.cache_checks``).
        early_exit (bool): stop the UNet after the last requested module (default True).
        noise_schedule (dict | None): the training noise schedule as DDPMScheduler arguments
            (``beta_schedule``, ``beta_start``, ``beta_end``, ``num_train_timesteps``,
            ``trained_betas``); required for a bare UNet folder or a pipeline folder without
            ``scheduler/scheduler_config.json``, overrides a pipeline's own otherwise.
    """

    def __init__(self,
                 pretrained,
                 layers,
                 timesteps,
                 noise='forward',
                 ensemble=1,
                 seed=None,
                 prompt='',
                 dtype='float32',
                 latent='mean',
                 input_norm=None,
                 class_label=None,
                 max_batch_size=None,
                 cache_dir=None,
                 early_exit=True,
                 noise_schedule=None,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self._check_options(noise, dtype, latent, ensemble)
        self.pretrained = pretrained.source if isinstance(pretrained, DiffusionComponents) \
            else pretrained
        self.layers = _as_list(layers)
        self.timesteps = [int(t) for t in _as_list(timesteps)]
        self.noise = noise
        self.ensemble = int(ensemble) if noise == 'forward' else 1
        if noise == 'none' and ensemble != 1:
            print_log(f"noise='none' makes every ensemble member identical; ensemble={ensemble} "
                      f'is reduced to 1.', logger='current', level=logging.WARNING)
        self.seed = seed
        self.prompt = prompt
        self.dtype_name = dtype
        self.compute_dtype = DTYPES[dtype]
        self.latent = latent
        self.class_label = class_label
        self.max_batch_size = max_batch_size
        self.early_exit = early_exit
        if input_norm is not None:
            self.register_buffer('_norm_mean', torch.tensor(input_norm['mean']).view(1, -1, 1, 1),
                                 persistent=False)
            self.register_buffer('_norm_std', torch.tensor(input_norm['std']).view(1, -1, 1, 1),
                                 persistent=False)
        self.input_norm = input_norm

        self.noise_schedule = noise_schedule
        # Held outside the module tree (see FrozenTeacherBase).
        if isinstance(pretrained, DiffusionComponents):
            self._parts = pretrained
            if noise_schedule is not None:
                self._parts = dataclasses.replace(pretrained, noise_scheduler=(
                    noise_scheduler_from_config(check_noise_schedule(noise_schedule))))
            for net in pretrained.modules().values():
                if net is not None and any(p.dtype != self.compute_dtype
                                           for p in net.parameters()):
                    net.to(dtype=self.compute_dtype)
        else:
            self._parts = load_diffusion_components(pretrained, dtype=self.compute_dtype,
                                                    noise_schedule=noise_schedule)
        self._hold(**self._parts.modules())
        self._check_timesteps()
        self._layer_modules = resolve_modules(self.unet, self.layers)
        self._text_cache = {}  # prompt -> (encoder_hidden_states [1, L, D], pooled [1, P] | None)
        self._fingerprint = None
        self._settings_digest = None
        if cache_dir is not None:
            self._check_cacheable(cache_dir)
        self.cache = FeatureCache(cache_dir) if cache_dir is not None else None

    # ------------------------------------------------------------------ set-up and properties
    @staticmethod
    def _check_options(noise, dtype, latent, ensemble):
        for name, value, allowed in (('noise', noise, NOISE_MODES), ('dtype', dtype, tuple(DTYPES)),
                                     ('latent', latent, LATENT_MODES)):
            if value not in allowed:
                raise TeacherConfigError(f'DiffusionTeacher {name}={value!r} is not one of {allowed}.')
        if int(ensemble) < 1:
            raise TeacherConfigError(f'DiffusionTeacher ensemble must be >= 1, got {ensemble}.')

    def _check_cacheable(self, cache_dir):
        if self.noise == 'forward' and self.seed is None:
            raise TeacherConfigError(
                f'DiffusionTeacher cache_dir={cache_dir!r} with noise=\'forward\' and seed=None: '
                f'a feature cache needs deterministic features, but every call draws new noise, '
                f"so a cached entry would freeze one random draw. Set noise='none' or a fixed "
                f'seed (e.g. seed=0), or remove cache_dir.')
        if self.vae is not None and self.latent == 'sample' and self.seed is None:
            raise TeacherConfigError(
                f"DiffusionTeacher cache_dir={cache_dir!r} with latent='sample' and seed=None: "
                f'a feature cache needs deterministic features, but each call draws a new sample '
                f'of the VAE posterior, so a cached entry would freeze one random draw. Set a '
                f"fixed seed (e.g. seed=0; the posterior draws are then seeded too), use "
                f"latent='mean', or remove cache_dir.")

    def _check_timesteps(self):
        steps = self.num_train_timesteps
        bad = [t for t in self.timesteps if not 0 <= t < steps]
        if bad or not self.timesteps:
            raise TeacherConfigError(
                f'Timesteps {bad or self.timesteps} are outside this teacher\'s range: its '
                f'scheduler has num_train_timesteps={steps}, so valid timesteps are 0..{steps - 1}.')

    @property
    def unet(self):
        return self._parts.unet

    @property
    def vae(self):
        return self._parts.vae

    @property
    def noise_scheduler(self):
        return self._parts.noise_scheduler

    @property
    def num_train_timesteps(self):
        return int(self.noise_scheduler.config.num_train_timesteps)

    @property
    def vae_scale_factor(self):
        if self.vae is None:
            return 1
        return 2**(len(self.vae.config.block_out_channels) - 1)

    @property
    def native_size(self):
        """The input image size (pixels) the teacher was trained at."""
        size = self.unet.config.sample_size
        size = size if isinstance(size, (list, tuple)) else (size, size)
        return tuple(int(s) * self.vae_scale_factor for s in size)

    @property
    def feature_keys(self):
        return [f'{layer}@{t}' for layer in self.layers for t in self.timesteps]

    def _on_moved(self):
        self._text_cache = {}

    def weights_fingerprint(self):
        """sha256 of every weight of the teacher (computed once)."""
        if self._fingerprint is None:
            self._fingerprint = module_fingerprint(self._parts.modules())
        return self._fingerprint

    def list_layers(self):
        return [name for name, _ in self.unet.named_modules() if name]

    # ------------------------------------------------------------------ inputs
    def to_unit_range(self, images):
        """Images as the teacher wants them: float in [-1, 1]."""
        images = images.float()
        if self.input_norm is not None:
            images = images * self._norm_std.to(images.device) + self._norm_mean.to(images.device)
            images = images / 127.5 - 1.0
        return images

    @torch.no_grad()
    def _posterior(self, images):
        """``(x0, std)``: the images themselves (``std`` None), or the VAE posterior's mean
        (``std`` None for ``latent='mean'``) and std, both times the scaling factor."""
        if self.vae is None:
            return images, None
        dist = self.vae.encode(images.to(self.compute_dtype)).latent_dist
        scale = self.vae.config.scaling_factor
        std = dist.std.float() * scale if self.latent == 'sample' else None
        return dist.mean.float() * scale, std

    @torch.no_grad()
    def encode(self, images):
        """x0 for the UNet: the images themselves, or their VAE latents times the scaling factor
        (``latent='sample'``: ensemble member 0's posterior draw)."""
        mean, std = self._posterior(images)
        if std is None:
            return mean
        return mean + std * self._member_noise(mean, LATENT_SEED_OFFSET)[:mean.shape[0]]

    def _member_noise(self, x0, seed_offset=0):
        """Standard normal noise for a batch laid out as (ensemble member, sample).

        With a seed, member e's noise is drawn once (from ``seed + seed_offset``) and shared by
        every sample, so a feature depends only on its own image and timestep (never on the rest
        of the batch).
        """
        n, shape = x0.shape[0], tuple(x0.shape[1:])
        if self.seed is not None:
            gen = torch.Generator().manual_seed(int(self.seed) + seed_offset)
            members = torch.randn((self.ensemble, ) + shape, generator=gen)
            noise = members[:, None].expand((self.ensemble, n) + shape)
        else:
            noise = torch.randn((self.ensemble, n) + shape, device=x0.device)
        return noise.reshape((-1, ) + shape).to(x0.device, torch.float32)

    def _encode_prompt(self, prompt=None):
        """``(encoder_hidden_states [1, L, D], pooled [1, P] | None)`` of ``prompt`` (default:
        ``self.prompt``).

        SD 1.x/2.x: the text encoder's last hidden state. SDXL (as diffusers'
        StableDiffusionXLPipeline): ``hidden_states[-2]`` of both encoders concatenated, and the
        pooled projection (``text_embeds``) of the second.
        """
        parts = self._parts
        prompt = self.prompt if prompt is None else prompt
        states, pooled = [], None
        for tokenizer, encoder in zip(parts.tokenizers, parts.text_encoders):
            ids = tokenizer(prompt, padding='max_length', truncation=True,
                            max_length=tokenizer.model_max_length,
                            return_tensors='pt').input_ids.to(self.device)
            out = encoder(ids, output_hidden_states=parts.is_sdxl)
            if parts.is_sdxl:
                states.append(out.hidden_states[-2])
                pooled = out[0] if out[0].dim() == 2 else pooled
            else:
                states.append(out[0])
        if parts.is_sdxl and pooled is None:
            raise TeacherConfigError(
                f'{self.pretrained}: an SDXL UNet needs the pooled text embedding of its second '
                f'text encoder, but text_encoder_2 is a {type(parts.text_encoders[1]).__name__} '
                f'whose first output is not a [batch, dim] projection. Use the pipeline\'s own '
                f'text_encoder_2 (a CLIPTextModelWithProjection).')
        return torch.cat(states, dim=-1), pooled

    def prompt_token_ids(self, prompt=None):
        """The token ids of ``prompt`` (default: the configured one) per tokenizer (what the text
        encoders see; for the cache key)."""
        prompt = self.prompt if prompt is None else prompt
        return [tok(prompt, padding='max_length', truncation=True,
                    max_length=tok.model_max_length).input_ids for tok in self._parts.tokenizers]

    @torch.no_grad()
    def _prompt_embeddings(self, prompt=None):
        """``(states, pooled)`` of one prompt (default: the configured one), encoded at its first
        use and cached."""
        prompt = self.prompt if prompt is None else prompt
        if prompt not in self._text_cache:
            states, pooled = self._encode_prompt(prompt)
            self._text_cache[prompt] = (states.to(self.compute_dtype), pooled)
        return self._text_cache[prompt]

    @torch.no_grad()
    def _text_conditioning(self, batch, image_size=None, prompts=None):
        """Prompt embeddings (and SDXL's added conditioning) for ``batch`` rows, each distinct
        prompt encoded once and cached. ``prompts``: one string per row, or None for the
        configured prompt.

        SDXL's time ids are ``(h, w, 0, 0, h, w)`` of the input image (``image_size``: original
        size = target size, no crop), as the SDXL pipeline builds them for an image of that size.
        """
        distinct = [None] if prompts is None else list(dict.fromkeys(prompts))
        if len(distinct) == 1:
            states, pooled = self._prompt_embeddings(distinct[0])
            states = states.expand(batch, -1, -1)
            pooled = pooled.expand(batch, -1) if pooled is not None else None
        else:
            encoded = [self._prompt_embeddings(p) for p in prompts]
            states = torch.cat([e[0] for e in encoded])
            pooled = torch.cat([e[1] for e in encoded]) if self._parts.is_sdxl else None
        kwargs = dict(encoder_hidden_states=states)
        if self._parts.is_sdxl:
            h, w = image_size or self.native_size
            time_ids = torch.tensor([[h, w, 0, 0, h, w]], device=self.device, dtype=self.compute_dtype)
            kwargs['added_cond_kwargs'] = dict(
                text_embeds=pooled.to(self.compute_dtype), time_ids=time_ids.expand(batch, -1))
        return kwargs

    def _check_prompts(self, prompts, n):
        """``prompts`` as a list of ``n`` strings (a single string is used for every image), or
        None."""
        if prompts is None:
            return None
        if not self._parts.is_text_conditioned:
            raise TeacherConfigError(
                f'prompts were passed to a teacher whose UNet ({self.pretrained}) is not '
                f'text-conditioned: it has no text encoder to read them. Pass prompts=None '
                f'(for a correspondence extractor: prompt_template=None).')
        prompts = [prompts] * n if isinstance(prompts, str) else list(prompts)
        if len(prompts) != n or not all(isinstance(p, str) for p in prompts):
            raise TeacherConfigError(
                f'prompts must be one string per image ({n} images), got {prompts!r}.')
        return prompts

    def _class_labels(self, class_labels, batch_images):
        if getattr(self.unet, 'class_embedding', None) is None:
            return None
        if class_labels is None:
            if self.class_label is None:
                raise TeacherConfigError(
                    'This teacher UNet is class-conditional: pass class_labels to the teacher or '
                    'set class_label in its config.')
            class_labels = torch.full((batch_images, ), int(self.class_label))
        return torch.as_tensor(class_labels, device=self.device).long()

    # ------------------------------------------------------------------ the forward
    def _unet_features(self, x_t, t, class_labels, prompts=None):
        """Run the UNet on a prepared batch in chunks; return {layer: features}. ``prompts``:
        one per row, or None for the configured prompt."""
        step = self.max_batch_size or x_t.shape[0]
        image_size = tuple(int(s) * self.vae_scale_factor for s in x_t.shape[-2:])
        chunks = []
        for start in range(0, x_t.shape[0], step):
            sl = slice(start, start + step)
            kwargs = {}
            if self._parts.is_text_conditioned:
                kwargs.update(self._text_conditioning(
                    x_t[sl].shape[0], image_size, None if prompts is None else prompts[sl]))
            if class_labels is not None:
                kwargs['class_labels'] = class_labels[sl]
            with FeatureRecorder(self._layer_modules, early_exit=self.early_exit) as rec:
                chunks.append(rec.run(lambda: self.unet(
                    x_t[sl].to(self.compute_dtype), t[sl], return_dict=False, **kwargs)))
        return {name: torch.cat([c[name] for c in chunks]).float() for name in self.layers}

    def _features(self, x0, t, labels, std=None, prompts=None):
        """Features of encoded inputs ``x0`` [N, ...] at per-sample timesteps ``t`` [N].

        Autograd follows the caller (here and in ``_unet_features``): the public entry points
        (``extract``, ``extract_at``) run under ``no_grad``; a trainable UNet (``correspondence``'s ``DiffusionStudent``) calls
        this with gradients on.

        ``std`` (``latent='sample'``): the posterior std; member e then starts from its own
        draw ``x0 + std * eps_e``. ``prompts``: N strings, or None for the configured prompt.
        """
        n, n_e = x0.shape[0], self.ensemble
        x0_rep = x0.float().repeat(n_e, 1, 1, 1)
        if std is not None:
            x0_rep = x0_rep + std.float().repeat(n_e, 1, 1, 1) * self._member_noise(
                x0, LATENT_SEED_OFFSET)
        t_rep = t.to(x0.device).repeat(n_e)
        if self.noise == 'forward':
            x_t = self.noise_scheduler.add_noise(x0_rep, self._member_noise(x0), t_rep.cpu())
            x_t = x_t.to(x0.device)
        else:
            x_t = x0_rep
        labels = labels.repeat(n_e) if labels is not None else None
        prompts = prompts * n_e if prompts is not None else None
        feats = self._unet_features(x_t, t_rep, labels, prompts)
        return {k: f.view(n_e, n, *f.shape[1:]).mean(dim=0) for k, f in feats.items()}

    def _check_runtime_timesteps(self, t):
        bad = t[(t < 0) | (t >= self.num_train_timesteps)]
        if bad.numel():
            raise TeacherConfigError(
                f'Timesteps {bad.tolist()[:5]} are outside 0..{self.num_train_timesteps - 1}.')

    @torch.no_grad()
    def extract(self, images, class_labels=None, prompts=None):
        """``{'{layer}@{t}': ...}`` at every configured timestep, without the cache.

        The VAE (latent models) runs once per image; all timesteps and ensemble members then
        run as one batched UNet call (split by ``max_batch_size``).
        """
        images = self.to_unit_range(images).to(self.device)
        x0, std = self._posterior(images)
        b, n_t = x0.shape[0], len(self.timesteps)
        t = torch.tensor(self.timesteps).repeat_interleave(b)
        labels = self._class_labels(class_labels, b)
        prompts = self._check_prompts(prompts, b)
        feats = self._features(x0.repeat(n_t, 1, 1, 1), t,
                               labels.repeat(n_t) if labels is not None else None,
                               std.repeat(n_t, 1, 1, 1) if std is not None else None,
                               prompts * n_t if prompts is not None else None)
        return {f'{layer}@{ts}': f[i * b:(i + 1) * b]
                for layer, f in feats.items() for i, ts in enumerate(self.timesteps)}

    @torch.no_grad()
    def extract_at(self, images, timesteps, class_labels=None, prompts=None):
        """``{layer: [B, ...]}`` with image i at its own timestep ``timesteps[i]`` (no cache)."""
        t = torch.as_tensor(timesteps).long().view(-1).cpu()
        self._check_runtime_timesteps(t)
        prompts = self._check_prompts(prompts, len(t))
        images = self.to_unit_range(images).to(self.device)
        x0, std = self._posterior(images)
        return self._features(x0, t, self._class_labels(class_labels, len(t)), std, prompts)

    def forward(self, images, class_labels=None, prompts=None):
        """``{'{layer}@{t}': float32 tensor [B, C, H, W]}`` at the configured timesteps.

        ``prompts`` (text-conditioned teachers): one string per image (or one for all) in place
        of the configured prompt; each distinct prompt is encoded once and cached.
        """
        prompts = self._check_prompts(prompts, len(images))
        if self.cache is None:
            return self.extract(images, class_labels, prompts)
        found = self._cached(
            images, class_labels, [self.feature_keys] * len(images),
            lambda idx, labels, sub: _per_image(self.extract(images[idx], labels, sub)), prompts)
        return {k: torch.stack([f[k] for f in found]).to(images.device) for k in self.feature_keys}

    def features_at(self, images, timesteps, class_labels=None, prompts=None):
        """``{layer: float32 [B, C, H, W]}`` with image i at timestep ``timesteps[i]``.

        This is what a distiller with a timestep sampler or policy calls. Uses the cache when
        one is configured. ``prompts``: as in :meth:`forward`.
        """
        t = torch.as_tensor(timesteps).long().view(-1).cpu()
        prompts = self._check_prompts(prompts, len(t))
        if self.cache is None:
            return self.extract_at(images, t, class_labels, prompts)

        def compute(idx, labels, sub):
            feats = _per_image(self.extract_at(images[idx], t[idx], labels, sub))
            return [{f'{k}@{int(t[i])}': v for k, v in f.items()} for f, i in zip(feats, idx)]

        wanted = [[f'{layer}@{int(ti)}' for layer in self.layers] for ti in t]
        found = self._cached(images, class_labels, wanted, compute, prompts)
        return {layer: torch.stack([f[f'{layer}@{int(ti)}'] for f, ti in zip(found, t)])
                .to(images.device) for layer in self.layers}

    # ------------------------------------------------------------------ the cache
    def cache_settings(self):
        """Everything besides the image, layer, timestep and label that changes a feature.

        The noise schedule enters as a digest of the actual ``alphas_cumprod`` (whatever config
        produced it); the networks as their weights' fingerprint plus their configs (a config
        such as ``norm_eps`` or ``flip_sin_to_cos`` changes outputs without changing weights);
        the prompt as the text and the token ids the encoders see. ``early_exit`` and
        ``max_batch_size`` are left out: they never change a feature.
        """
        vae = self.vae
        return dict(
            version=CACHE_FORMAT_VERSION, pretrained=self.pretrained, noise=self.noise,
            ensemble=self.ensemble, seed=self.seed,
            latent_seed_offset=LATENT_SEED_OFFSET if self.latent == 'sample' else None,
            dtype=self.dtype_name, input_norm=self.input_norm, class_label=self.class_label,
            latent=self.latent if vae is not None else None,
            vae_scaling_factor=None if vae is None else float(vae.config.scaling_factor),
            prompt=self.prompt,
            prompt_token_ids=self.prompt_token_ids() if self._parts.is_text_conditioned else None,
            num_train_timesteps=self.num_train_timesteps,
            alphas_cumprod=tensor_digest(self.noise_scheduler.alphas_cumprod.double()),
            configs={name: _config_dict(net) for name, net in self._parts.modules().items()
                     if net is not None},
            weights=self.weights_fingerprint())

    def settings_digest(self):
        """sha256 of :meth:`cache_settings` (computed once, at the first cached call)."""
        if self._settings_digest is None:
            self._settings_digest = make_key(**self.cache_settings())
        return self._settings_digest

    def _cached(self, images, class_labels, wanted, compute, prompts=None):
        """Per image i, the features named ``wanted[i]``: from the cache, or computed for the
        images with any miss by ``compute(indices, labels, prompts)`` (a list of per-image
        dicts) and stored. A per-call prompt enters the key (text and token ids); without one the
        key is the configured prompt's (in the settings), as before."""
        settings = self.settings_digest()
        labels = None if class_labels is None else torch.as_tensor(class_labels).view(-1)
        image_ids = [tensor_digest(img.float()) for img in images]
        extra = [{} for _ in images]
        if prompts is not None:
            token_ids = {p: self.prompt_token_ids(p) for p in set(prompts)}
            extra = [dict(prompt=p, prompt_token_ids=token_ids[p]) for p in prompts]
        keys = [{k: make_key(settings=settings, feature=k, image=image_ids[i],
                             label=None if labels is None else int(labels[i]), **extra[i])
                 for k in wanted[i]} for i in range(len(images))]
        found = [{k: self.cache.get(key) for k, key in per_image.items()} for per_image in keys]
        todo = [i for i, f in enumerate(found) if any(v is None for v in f.values())]
        if todo:
            fresh = compute(todo, None if labels is None else labels[todo],
                            None if prompts is None else [prompts[i] for i in todo])
            for i, feats in zip(todo, fresh):
                for k in wanted[i]:
                    found[i][k] = feats[k].cpu()
                    self.cache.put(keys[i][k], found[i][k])
        return found


def _config_dict(net):
    """A network's architecture config as a plain dict, without bookkeeping entries (names and
    versions starting with ``_``, ``transformers_version``) that never change an output."""
    config = net.config
    config = config.to_dict() if hasattr(config, 'to_dict') else dict(config)
    return {k: v for k, v in config.items()
            if not k.startswith('_') and k not in ('transformers_version', 'name_or_path')}


def _per_image(features):
    """``{key: [N, ...]}`` → a list of N dicts ``{key: [...]}``."""
    n = len(next(iter(features.values())))
    return [{k: v[i] for k, v in features.items()} for i in range(n)]
