"""``DMDDistiller``: DMD / DMD2 distillation of a diffusion teacher into a one-step generator.

Three copies of the teacher: the frozen real score (the teacher itself), the trainable one-step
generator ``G(z) = D(sigma z; sigma)`` (:class:`~generation_dmd.generator.OneStepGenerator`) and the
trainable fake score, a diffusion model of the generator's own images. Each training step

1. (generator phase, when ``step % fake_updates_per_generator_update == 0``) generates a batch,
   and updates the generator with the distribution-matching loss, plus DMD v1's regression loss
   on teacher pairs and/or DMD2's non-saturating GAN loss; then the generator's EMA;
2. (fake phase, every step) updates the fake score with its denoising loss on the same generated
   images (detached), plus DMD2's discriminator loss, whose classifier reads the fake score's
   bottleneck (:mod:`generation_dmd.gan_head`).

DMD v1 is ratio 1 (generator first, then the fake score, as the reference re-implementation);
DMD2 is ratio 5 (two time-scale update rule, TTUR).

The one rule: the teacher is held OUTSIDE the module tree (a plain attribute dict, moved by
``.to()``), so it never appears in ``state_dict()``, ``parameters()``, an optimizer or a
checkpoint. ``state_dict()`` holds ``generator.*``, ``generator_ema.*`` (when ``ema_decay`` is
set), ``fake_score.*``, ``discriminator.*`` (when the GAN is on) and three int64 buffers: ``step``
(training steps done: the TTUR phase), ``rng_seed`` and ``ema_updates``. Every random draw of a
step (noise, noise levels, labels) comes from a generator seeded with ``(rng_seed, step, rank)``,
so a resumed run draws exactly what the uninterrupted one drew, and DDP ranks draw differently.

Batches ``train_step`` understands (see :meth:`DMDDistiller.parse_batch`):

* DMD pairs (``DMDPairDataset``: ``latent``, ``image``, ``class_id``): the regression loss maps
  ``G(latent)`` to ``image`` (clipped to [-1, 1]); the DM branch draws fresh noise with the same
  labels;
* real images in mmpretrain form (``inputs`` uint8 + ``data_samples`` with ``gt_label``): run
  through ``data_preprocessor`` (which must map them to [-1, 1]); they are the GAN's real side
  (with their own labels), the generator's labels are uniform (DMD2);
* anything else (``class_id`` only, e.g. a seeds dataset): the generator's labels are the given
  ``class_id`` (uniform random where it is -1).

For an unconditional teacher class ids are ignored (there are no labels to give).

Under DDP use ``model_wrapper_cfg=dict(type='MMSeparateDistributedDataParallel')``: each
trainable part is wrapped on its own, and every wrapped part runs exactly one forward per phase
(generator: one call on noise and pair latents together; fake score: one call on its denoising
inputs and both GAN inputs together); frozen uses (the fake score inside the generator's losses)
go through the bare modules.
"""
import contextlib
import copy
import hashlib

import torch
import torch.nn.functional as F
from mmengine.dist import get_rank
from mmengine.model import BaseModel, is_model_wrapper
from mmengine.optim import OptimWrapperDict
from mmengine.registry import MODELS

from common.feature_hooks import FeatureRecorder
from .gan_head import bottleneck_channels, resolve_bottleneck
from .generator import OneStepGenerator, to_uint8
from .losses import gan_discriminator_loss, gan_generator_loss, randn_like, _randint

OPTIM_KEYS = ('generator', 'fake_score')
GAN_KEYS = ('head', 'bottleneck', 'generator_weight', 'discriminator_weight', 'diffusion_gan',
            'diffusion_gan_max_step')
GAN_DEFAULTS = dict(head=dict(type='BottleneckClassifier'), bottleneck=None,
                    generator_weight=3e-3, discriminator_weight=1e-2, diffusion_gan=True,
                    diffusion_gan_max_step=1000)


class DMDBatchError(ValueError):
    """A training or test batch the distiller cannot use."""


def bare(module):
    """The module inside a DDP-style wrapper (the module itself when not wrapped)."""
    return module.module if is_model_wrapper(module) else module


def label_dim(net):
    """Number of classes of a denoiser (0 = unconditional)."""
    for name in ('label_dim', 'num_classes'):
        value = getattr(net, name, None)
        if value:
            return int(value)
    return 0


def set_dropout(net, p):
    """Set every dropout probability of ``net`` to ``p``: ``torch.nn.Dropout*`` modules (diffusers)
    and the ``dropout`` attribute of EDM's ``UNetBlock``. Returns how many were set."""
    from .networks.layers import UNetBlock
    count = 0
    for module in net.modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd):
            module.p = float(p)
            count += 1
        elif isinstance(module, UNetBlock):
            module.dropout = float(p)
            count += 1
    return count


@contextlib.contextmanager
def frozen(*modules):
    """Temporarily ``requires_grad_(False)`` on the parameters of ``modules`` (then restored), so
    a backward through them leaves no gradients on them."""
    params = [p for m in modules if m is not None for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def _step_seed(seed, step, rank):
    digest = hashlib.blake2b(f'dmd:{seed}:{step}:{rank}'.encode(), digest_size=8).digest()
    return int.from_bytes(digest, 'little') & ((1 << 63) - 1)


def _as_tensor(value, dtype=None):
    if torch.is_tensor(value):
        return value
    if isinstance(value, (list, tuple)) and value and torch.is_tensor(value[0]):
        return torch.stack(list(value))
    return torch.as_tensor(value, dtype=dtype)


@MODELS.register_module()
class DMDDistiller(BaseModel):
    """DMD (v1) and DMD2 distillation (see the module docstring).

    Args:
        teacher: the real score: a module, or a MODELS config (``dict(type='load_edm',
            folder=...)``, ``dict(type='DiffusersDenoiser', pretrained=...)``).
        generator_sigma (float): the generator's noise level: 80.0 (DMD2, FastGen) or 79.5638
            (the reference DMD re-implementation: the 1000-point Karras grid's second-largest).
        dm_loss / fake_score_loss (dict): :class:`~generation_dmd.losses.DistributionMatchingLoss`
            and :class:`~generation_dmd.losses.FakeScoreLoss` configs.
        regression_loss (dict | None): DMD v1's ``LPIPSRegressionLoss`` (or ``L2RegressionLoss``);
            needs DMD pair batches.
        gan (dict | None): DMD2's GAN: ``head`` (a ``BottleneckClassifier`` config;
            ``in_channels`` is read from the bottleneck when omitted), ``bottleneck`` (a module
            path of the fake score; default per network, see ``gan_head.default_bottleneck``),
            ``generator_weight`` (3e-3), ``discriminator_weight`` (1e-2), ``diffusion_gan``
            (True: real and fake images are noised at a sigma of index ``U{0,
            diffusion_gan_max_step - 1}`` on the fake score loss's Karras grid before the fake
            score reads them, as DMD2's ``--diffusion_gan``; False: clean images at the grid's
            smallest sigma, 0.002 by default). Needs real-image batches.
        fake_updates_per_generator_update (int): the TTUR ratio (1: DMD v1, 5: DMD2).
        ema_decay (float | None): EMA of the generator (``generator_ema``), updated after each
            generator update; ``ema_warmup=True`` uses ``min(decay, (1 + n) / (10 + n))`` after
            ``n`` updates.
        dropout (float | None): dropout of the generator and the fake score (EDM's CIFAR-10
            networks have 0.13; DMD2 and FastGen use 0; the reference DMD re-implementation
            keeps 0.13). None keeps the teacher's.
        test_use_ema (bool): ``val_step``/``test_step`` sample the EMA generator when present.
        seed (int | None): seeds the per-step draws; default ``torch.initial_seed()`` at build
            time (the runner's ``randomness.seed``). Stored in the ``rng_seed`` buffer.
    """

    def __init__(self, teacher, generator_sigma=80.0,
                 dm_loss=dict(type='DistributionMatchingLoss'),
                 fake_score_loss=dict(type='FakeScoreLoss'), regression_loss=None, gan=None,
                 fake_updates_per_generator_update=1, ema_decay=None, ema_warmup=False,
                 dropout=0.0, test_use_ema=True, seed=None, data_preprocessor=None,
                 init_cfg=None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if isinstance(teacher, dict):
            teacher = MODELS.build(teacher)
        if not isinstance(teacher, torch.nn.Module):
            raise TypeError(
                f'DMDDistiller: teacher is a {type(teacher).__name__}; expected a denoiser module '
                f'D(x, sigma, labels) or its MODELS config, e.g. dict(type=\'load_edm\', '
                f'folder=\'data/edm/edm-cifar10-32x32-cond-vp\').')
        ratio = fake_updates_per_generator_update
        if isinstance(ratio, bool) or not isinstance(ratio, int) or ratio < 1:
            raise ValueError(
                f'DMDDistiller: fake_updates_per_generator_update={ratio!r}; expected a positive '
                f'integer (1 for DMD, 5 for DMD2\'s two time-scale updates).')
        if ema_decay is not None and not 0 < float(ema_decay) < 1:
            raise ValueError(f'DMDDistiller: ema_decay={ema_decay!r}; expected a number in '
                             f'(0, 1) (FastGen: 0.9999) or None for no EMA.')
        teacher = teacher.eval().requires_grad_(False)
        self.__dict__['_held'] = dict(teacher=teacher)
        self.num_classes = label_dim(teacher) or None
        if self.num_classes is not None and self.num_classes < 0:
            raise ValueError(
                f'DMDDistiller: the teacher ({type(teacher).__name__}) is conditioned through an '
                f'embedding other than class ids (num_classes={self.num_classes}); DMDDistiller '
                f'distils unconditional or class-conditional (num_class_embeds) teachers only.')
        self.generator = OneStepGenerator(copy.deepcopy(teacher), generator_sigma).train()
        self.generator.requires_grad_(True)
        self.fake_score = copy.deepcopy(teacher).train().requires_grad_(True)
        if dropout is not None:
            set_dropout(self.generator, dropout)
            set_dropout(self.fake_score, dropout)
        self.dropout = dropout
        self.ratio = ratio
        self.dm_loss = MODELS.build(dm_loss)
        self.fake_score_loss = MODELS.build(fake_score_loss)
        self.regression_loss = None if regression_loss is None else MODELS.build(regression_loss)
        self.gan = self._gan_settings(gan)
        self.discriminator = None
        if self.gan is not None:
            head = dict(self.gan['head'])
            path, _ = resolve_bottleneck(self.fake_score, self.gan['bottleneck'])
            self.gan['bottleneck'] = path
            if 'in_channels' not in head:
                head['in_channels'] = bottleneck_channels(
                    self.fake_score, path, self.generator.image_shape, self.num_classes)
            self.discriminator = MODELS.build(head)
            if int(self.gan['diffusion_gan_max_step']) > len(self.fake_score_loss.sigmas):
                raise ValueError(
                    f'DMDDistiller: gan.diffusion_gan_max_step='
                    f'{self.gan["diffusion_gan_max_step"]} exceeds the fake score loss\'s '
                    f'{len(self.fake_score_loss.sigmas)}-point noise grid; lower it.')
        self.ema_decay = None if ema_decay is None else float(ema_decay)
        self.ema_warmup = bool(ema_warmup)
        self.generator_ema = None
        if self.ema_decay is not None:
            self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False).eval()
        self.test_use_ema = bool(test_use_ema)
        if seed is None:
            seed = torch.initial_seed()
        self.register_buffer('step', torch.zeros((), dtype=torch.int64))
        self.register_buffer('rng_seed', torch.tensor(int(seed) % (1 << 63)))
        self.register_buffer('ema_updates', torch.zeros((), dtype=torch.int64))
        self._check_sigma_ranges(teacher)
        if self.dm_loss.real_guidance_scale != 1.0 and (
                not self.num_classes or hasattr(teacher, 'unet')):
            raise ValueError(
                f'DMDDistiller: dm_loss.real_guidance_scale={self.dm_loss.real_guidance_scale} '
                f'needs an unconditional branch of the teacher, called with an all-zero one-hot '
                f'label; this teacher ({type(teacher).__name__}, '
                f'{self.num_classes or "no"} classes) has none. Set real_guidance_scale=1.')

    # ------------------------------------------------------------------------------ set-up
    @staticmethod
    def _gan_settings(gan):
        if gan is None:
            return None
        unknown = sorted(set(gan) - set(GAN_KEYS))
        if unknown:
            import difflib
            near = {k: difflib.get_close_matches(k, GAN_KEYS, n=1, cutoff=0.5) for k in unknown}
            raise ValueError(
                f'DMDDistiller: gan has unknown keys {unknown}; expected some of {list(GAN_KEYS)}'
                + ''.join(f' ({k!r}: did you mean {v[0]!r}?)' for k, v in near.items() if v)
                + '. Fix the gan dict of the model config.')
        settings = {**GAN_DEFAULTS, **gan}
        if not int(settings['diffusion_gan_max_step']) >= 1:
            raise ValueError(f'DMDDistiller: gan.diffusion_gan_max_step='
                             f'{settings["diffusion_gan_max_step"]!r}; expected a positive index '
                             f'bound on the fake score loss\'s Karras grid (DMD2: 1000).')
        return settings

    def _check_sigma_ranges(self, teacher):
        """A DDPM teacher (DiffusersDenoiser) only takes its trained noise levels: every grid
        the losses draw from must lie inside them."""
        if not hasattr(teacher, 'log_sigmas'):
            return
        lo, hi = teacher.sigma_min, teacher.sigma_max
        ranges = dict(dm_loss=self.dm_loss.sigma_range,
                      fake_score_loss=self.fake_score_loss.sigma_range)
        if self.gan is not None:
            top = int(self.gan['diffusion_gan_max_step']) - 1 if self.gan['diffusion_gan'] else 0
            ranges['gan'] = float(self.gan_sigmas[0]), float(self.gan_sigmas[top])
        bad = {k: v for k, v in ranges.items()
               if v[0] < lo * (1 - 1e-6) or v[1] > hi * (1 + 1e-6)}
        if bad:
            safe_lo = float(f'{lo * (1 + 2e-6):.7g}')  # rounded inwards
            safe_hi = float(f'{hi * (1 - 2e-6):.7g}')
            raise ValueError(
                f'DMDDistiller: the teacher ({type(teacher).__name__}) only takes noise levels in '
                f'[{lo:.6g}, {hi:.6g}] (its DDPM schedule), but '
                + ', '.join(f'{k} draws from [{a:.6g}, {b:.6g}]' for k, (a, b) in bad.items())
                + f'. Set sigma_min={safe_lo} (and sigma_max at most {safe_hi}) in both dm_loss '
                f'and fake_score_loss (with sigma_sampling=\'karras_grid\'; the GAN uses the '
                f'fake score loss\'s grid).')

    @property
    def gan_sigmas(self):
        """The GAN's noise grid: the fake score loss's Karras grid (as DMD2, one table)."""
        return self.fake_score_loss.sigmas

    @property
    def teacher(self):
        """The frozen real score (held outside the module tree)."""
        return self.__dict__['_held']['teacher']

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        self.teacher._apply(fn, *args, **kwargs)
        return self

    def train(self, mode=True):
        super().train(mode)
        self.teacher.eval()
        if self.generator_ema is not None:
            self.generator_ema.eval()
        return self

    # ------------------------------------------------------------------------------ helpers
    def step_generator(self, step=None):
        """The CPU ``torch.Generator`` of training step ``step`` (default: the current one)."""
        step = int(self.step) if step is None else int(step)
        return torch.Generator().manual_seed(_step_seed(int(self.rng_seed), step, get_rank()))

    @property
    def image_shape(self):
        """(C, H, W) of the generated images."""
        return tuple(bare(self.generator).image_shape)

    @property
    def device(self):
        return next(bare(self.generator).parameters()).device

    def one_hot(self, class_ids):
        if self.num_classes is None:
            return None
        return F.one_hot(class_ids.long(), self.num_classes).to(torch.float32)

    def _random_labels(self, n, generator, device):
        return _randint(0, self.num_classes, n, generator, device)

    def parse_batch(self, data, generator):
        """A dict of what the batch provides: ``size``, ``labels`` (class ids for the generator,
        None when unconditional), and optionally ``ref_latent``/``ref_image`` (pairs) and
        ``real``/``real_labels`` (real images in [-1, 1])."""
        device = self.device
        if isinstance(data, dict) and 'inputs' in data:
            data = self.data_preprocessor(data, True)
            real = data['inputs']
            if not torch.is_tensor(real) or not real.is_floating_point():
                raise DMDBatchError(
                    f'DMDDistiller: real images came out of the data preprocessor '
                    f'({type(self.data_preprocessor).__name__}) as '
                    f'{type(real).__name__ if not torch.is_tensor(real) else real.dtype}; '
                    f'expected a float batch in [-1, 1]. Set data_preprocessor=dict(type='
                    f'\'mmpretrain.ClsDataPreprocessor\', mean=[127.5] * 3, std=[127.5] * 3, '
                    f'to_rgb=False) in the model config.')
            real = real.to(device, torch.float32)
            samples = data.get('data_samples') or []
            real_labels = None
            if self.num_classes is not None:
                if len(samples) != real.shape[0] or not all(
                        getattr(s, 'gt_label', None) is not None for s in samples):
                    raise DMDBatchError(
                        f'DMDDistiller: a batch of {real.shape[0]} real images came without a '
                        f'gt_label per image; a class-conditional teacher ({self.num_classes} '
                        f'classes) needs them for the discriminator\'s real side. Pack the '
                        f'labels with mmpretrain\'s PackInputs.')
                real_labels = torch.cat([s.gt_label.reshape(-1)[:1] for s in samples]).to(device)
            n = real.shape[0]
            labels = None if self.num_classes is None else \
                self._random_labels(n, generator, device)
            return dict(size=n, labels=labels, real=real, real_labels=real_labels)
        if not isinstance(data, dict):
            raise DMDBatchError(
                f'DMDDistiller: a training batch is a {type(data).__name__}; expected a dict: DMD '
                f'pairs (latent, image, class_id), real images (inputs, data_samples) or class '
                f'ids (class_id). Check the train dataloader\'s dataset and collate_fn.')
        out = {}
        if 'latent' in data or 'image' in data:
            if not ('latent' in data and 'image' in data):
                raise DMDBatchError(
                    f'DMDDistiller: a pair batch needs both latent and image; got keys '
                    f'{sorted(data)}. Use DMDPairDataset.')
            out['ref_latent'] = _as_tensor(data['latent']).to(device, torch.float32)
            out['ref_image'] = _as_tensor(data['image']).to(device, torch.float32).clamp(-1, 1)
            if out['ref_latent'].shape != out['ref_image'].shape or \
                    tuple(out['ref_latent'].shape[1:]) != self.image_shape:
                raise DMDBatchError(
                    f'DMDDistiller: pair latents {tuple(out["ref_latent"].shape)} and images '
                    f'{tuple(out["ref_image"].shape)} do not both have the generator\'s shape '
                    f'(batch, {", ".join(map(str, self.image_shape))}); the pairs were '
                    f'built for another teacher. Rebuild them with tools/build_dmd_pairs.py.')
        ids = data.get('class_id')
        if ids is not None:
            ids = _as_tensor(ids, torch.long).reshape(-1).to(device)
        size = None
        for value in (out.get('ref_latent'), ids, *(data.values())):
            if torch.is_tensor(value) and value.dim() > 0:
                size = value.shape[0]
                break
            if isinstance(value, (list, tuple)) and value:
                size = len(value)
                break
        if not size:
            raise DMDBatchError(
                f'DMDDistiller: cannot tell the batch size of a batch with keys {sorted(data)}; '
                f'expected DMD pairs, real images or per-item class ids (class_id, -1 for '
                f'"draw one").')
        if self.num_classes is None:
            labels = None  # an unconditional teacher: class ids (e.g. pairs' 0) play no part
        else:
            labels = self._random_labels(size, generator, device)
            if ids is not None:
                if bool((ids >= self.num_classes).any()):
                    raise DMDBatchError(
                        f'DMDDistiller: class ids up to {int(ids.max())} for a teacher with '
                        f'{self.num_classes} classes; expected ids in [0, {self.num_classes}) '
                        f'or -1.')
                labels = torch.where(ids >= 0, ids, labels)
        out.update(size=size, labels=labels)
        return out

    def _gan_noisy(self, x, generator):
        n = x.shape[0]
        if not self.gan['diffusion_gan']:
            return x, self.gan_sigmas[:1].to(x.device, torch.float32).expand(n)
        idx = _randint(0, int(self.gan['diffusion_gan_max_step']), n, generator,
                       self.gan_sigmas.device)
        sigma = self.gan_sigmas[idx].to(x.device, torch.float32)
        return x + sigma.view(-1, 1, 1, 1) * randn_like(x, generator), sigma

    def _bottleneck_module(self):
        fake = bare(self.fake_score)
        return {self.gan['bottleneck']: resolve_bottleneck(fake, self.gan['bottleneck'])[1]}

    def _check_finite(self, losses, step):
        for name, value in losses.items():
            if not bool(torch.isfinite(value).all()):
                raise RuntimeError(
                    f'DMDDistiller: {name} is {float(value.detach())} at training step {step} (not '
                    f'finite); training stops here rather than write NaN weights. Lower the '
                    f'learning rates, keep gradient clipping on (clip_grad max_norm 10) or train '
                    f'in float32, and resume from the last checkpoint.')

    # ------------------------------------------------------------------------------ training
    def train_step(self, data, optim_wrapper):
        if not isinstance(optim_wrapper, OptimWrapperDict) or \
                sorted(optim_wrapper.keys()) != sorted(OPTIM_KEYS):
            got = sorted(optim_wrapper.keys()) if isinstance(optim_wrapper, OptimWrapperDict) \
                else type(optim_wrapper).__name__
            raise TypeError(
                f'DMDDistiller.train_step needs an OptimWrapperDict with keys {list(OPTIM_KEYS)}, '
                f'got {got}. Build it with optim_wrapper=dict(constructor='
                f'\'DMDOptimWrapperConstructor\', generator=dict(type=\'OptimWrapper\', '
                f'optimizer=...), fake_score=dict(type=\'OptimWrapper\', optimizer=...)).')
        if next(self.teacher.parameters()).device != self.device:
            self.teacher.to(self.device)
        step = int(self.step)
        generator = self.step_generator(step)
        batch = self.parse_batch(data, generator)
        if self.gan is not None and 'real' not in batch:
            raise DMDBatchError(
                'DMDDistiller: the GAN (gan=...) needs real images, but this batch has none; '
                'train on a real-image dataset (mmpretrain form: inputs + data_samples), or set '
                'gan=None.')
        if self.regression_loss is not None and 'ref_latent' not in batch:
            raise DMDBatchError(
                'DMDDistiller: regression_loss needs DMD pairs (latent, image, class_id) in every '
                'batch, but this batch has none; train on a DMDPairDataset '
                '(tools/build_dmd_pairs.py), or set regression_loss=None.')
        log = {}
        if step % self.ratio == 0:
            x, gen_log = self._generator_phase(batch, optim_wrapper['generator'], generator, step)
            log.update(gen_log)
        else:
            noise = randn_like(torch.empty((batch['size'], ) + self.image_shape,
                                           device=self.device), generator)
            with torch.no_grad():
                x = bare(self.generator)(noise, self.one_hot(batch['labels']))
        log.update(self._fake_phase(batch, x.detach(), optim_wrapper['fake_score'], generator,
                                    step))
        self.step += 1
        return log

    def _generator_phase(self, batch, wrapper, generator, step):
        n = batch['size']
        labels = self.one_hot(batch['labels'])
        noise = randn_like(torch.empty((n, ) + self.image_shape, device=self.device),
                           generator)
        inputs, cond = noise, labels
        if self.regression_loss is not None:
            inputs = torch.cat([noise, batch['ref_latent']])
            cond = None if labels is None else torch.cat([labels, labels])
        losses = {}
        with wrapper.optim_context(self.generator):
            out = self.generator(inputs, cond).float()
            x = out[:n]
            fake, disc = bare(self.fake_score), \
                None if self.discriminator is None else bare(self.discriminator)
            with frozen(fake, disc):
                losses['loss_dm'], dm_log = self.dm_loss(x, self.teacher, fake, labels,
                                                         generator=generator)
                if self.regression_loss is not None:
                    losses['loss_reg'] = self.regression_loss(out[n:], batch['ref_image'])
                if self.gan is not None:
                    x_t, sigma = self._gan_noisy(x, generator)
                    with FeatureRecorder(self._bottleneck_module(), early_exit=True) as rec:
                        feats = rec.run(lambda: fake(x_t, sigma, labels))
                    logits = disc(feats[self.gan['bottleneck']])
                    losses['loss_gan_g'] = float(self.gan['generator_weight']) * \
                        gan_generator_loss(logits)
        self._check_finite(losses, step)
        wrapper.update_params(sum(losses.values()))
        if self.generator_ema is not None:
            self.update_ema()
        log = {k: v.detach() for k, v in losses.items()}
        log['dm_grad_norm'] = dm_log['dm_grad_norm']
        return x, log

    def _fake_phase(self, batch, x, wrapper, generator, step):
        n = x.shape[0]
        labels = self.one_hot(batch['labels'])
        x_t, sigma = self.fake_score_loss.noisy(x, generator)
        inputs, sigmas, conds = [x_t], [sigma], [labels]
        if self.gan is not None:
            real = batch['real']
            real_t, real_sigma = self._gan_noisy(real, generator)
            fake_t, fake_sigma = self._gan_noisy(x, generator)
            inputs += [real_t, fake_t]
            sigmas += [real_sigma, fake_sigma]
            conds += [self.one_hot(batch['real_labels']), labels]
        cond = None if labels is None else torch.cat(conds)
        losses = {}
        recorder = FeatureRecorder(self._bottleneck_module(), early_exit=False) \
            if self.gan is not None else contextlib.nullcontext()
        with wrapper.optim_context(self.fake_score):
            with recorder:
                pred = self.fake_score(torch.cat(inputs), torch.cat(sigmas), cond)
            losses['loss_fake'], _ = self.fake_score_loss.loss_from_prediction(
                pred[:n], x, sigma)
            if self.gan is not None:
                feats = recorder.outputs[self.gan['bottleneck']][n:]
                logits = self.discriminator(feats)
                n_real = batch['real'].shape[0]
                losses['loss_gan_d'] = float(self.gan['discriminator_weight']) * \
                    gan_discriminator_loss(logits[n_real:], logits[:n_real])
        self._check_finite(losses, step)
        wrapper.update_params(sum(losses.values()))
        return {k: v.detach() for k, v in losses.items()}

    @torch.no_grad()
    def update_ema(self):
        """One EMA step of ``generator_ema`` towards the generator (buffers are copied)."""
        n = int(self.ema_updates)
        decay = self.ema_decay
        if self.ema_warmup:
            decay = min(decay, (1 + n) / (10 + n))
        source = bare(self.generator)
        for ema, param in zip(self.generator_ema.parameters(), source.parameters()):
            ema.lerp_(param.detach().to(ema.dtype), 1 - decay)
        for ema, buf in zip(self.generator_ema.buffers(), source.buffers()):
            ema.copy_(buf)
        self.ema_updates += 1

    # ------------------------------------------------------------------------------ sampling
    def sampling_generator(self):
        """The generator used by ``val_step``/``test_step``: the EMA one when present and
        ``test_use_ema``, else the trained one."""
        if self.generator_ema is not None and self.test_use_ema:
            return self.generator_ema
        return bare(self.generator)

    def predict(self, data):
        """``{'seed', 'class_id'}`` batch (lists or tensors) -> list of ``{'image': uint8 (C, H,
        W) on the CPU, 'seed': int, 'class_id': int}`` (-1 = unconditional)."""
        if not isinstance(data, dict) or 'seed' not in data:
            raise DMDBatchError(
                f'DMDDistiller: a val/test batch must be a dict with seed (and class_id), as '
                f'GenerationSeedsDataset gives; got '
                f'{sorted(data) if isinstance(data, dict) else type(data).__name__}.')
        seeds = [int(s) for s in _as_tensor(data['seed'], torch.long).reshape(-1).tolist()]
        ids = data.get('class_id')
        ids = [-1] * len(seeds) if ids is None else \
            [int(c) for c in _as_tensor(ids, torch.long).reshape(-1).tolist()]
        gen = self.sampling_generator()
        if gen.num_classes is None:
            if any(c >= 0 for c in ids):
                raise DMDBatchError('DMDDistiller: class ids given for an unconditional '
                                    'generator; set the seeds dataset\'s num_classes=None.')
            class_ids = None
        else:
            if any(c < 0 for c in ids):
                raise DMDBatchError(
                    f'DMDDistiller: class_id -1 for a class-conditional generator '
                    f'({gen.num_classes} classes); set the seeds dataset\'s num_classes='
                    f'{gen.num_classes}.')
            class_ids = ids
        images = to_uint8(gen.generate(seeds, class_ids, batch_size=max(1, len(seeds)),
                                       device=self.device)).cpu()
        return [dict(image=images[i], seed=seeds[i], class_id=ids[i] if class_ids else -1)
                for i in range(len(seeds))]

    def val_step(self, data):
        return self.predict(data)

    def test_step(self, data):
        return self.predict(data)

    def forward(self, inputs=None, data_samples=None, mode='tensor'):
        """``mode='tensor'``: the generator's raw output for noise ``inputs`` and labels
        ``data_samples`` (class ids or one-hot); ``'predict'``: :meth:`predict` of the batch
        ``inputs``. There is no ``'loss'`` mode: training runs only through ``train_step``."""
        if mode == 'loss':
            raise RuntimeError(
                'DMDDistiller has no forward(mode="loss"): its generator and fake score update '
                'alternately with their own optimizers, so training runs only through '
                'train_step(data, optim_wrapper) with the OptimWrapperDict of '
                'DMDOptimWrapperConstructor (as mmengine\'s Runner does).')
        if mode == 'predict':
            return self.predict(inputs)
        if mode == 'tensor':
            return bare(self.generator)(inputs, data_samples)
        raise ValueError(f"DMDDistiller.forward: mode={mode!r}; expected 'tensor' or "
                         f"'predict' (training runs through train_step).")
