"""Diffusion Hyperfeatures (Luo et al., NeurIPS'23) as a correspondence extractor.

The one rule: only the aggregation network is trainable and only it is in ``state_dict()``; the
diffusion teacher is frozen and held outside the module tree (as every
:class:`~common.teachers.DiffusionTeacher`), so a checkpoint of this extractor is the aggregation
network alone (``aggregation.mixing_weights``, ``aggregation.projections.{l}.*``).

What it computes, for ``extractor(images [B, 3, H, W] in [0, 1]) -> [B, projection_dim, s, s]``:

1. The residual-branch output of decoder ResnetBlock2Ds (default: every
   ``up_blocks.{i}.resnets.{j}``), read by forward hooks on their ``conv2``. In diffusers'
   ResnetBlock2D, ``conv2`` is the last operation of the residual branch: the block returns
   ``(shortcut(input) + conv2_output) / output_scale_factor``, so the hook sees exactly the
   branch before the shortcut add (what the reference code stored by replacing the block's
   ``forward``; checked against a hand-computed branch in the tests).
2. At several diffusion "timesteps", either
   ``noise='ddim_inversion'`` (the paper, real images): the clean latent is inverted with
   deterministic DDIM (``num_inversion_steps`` steps, 'leading' spacing
   ``t_k = k * (T // N) + steps_offset``), the UNet being evaluated at the noise level of the
   current latent (``-1`` for the clean one, as the reference does) and the features kept at
   the reference's ``save_steps`` (step ``s`` counts from the noisy end: ``s = N - 1`` is the
   clean latent, the first UNet call). The full model is ``N=50``, ``save_steps=(49, 45, ...,
   5, 0)``; the "one-step" model is ``N=1``, ``save_steps=(0,)``: one UNet call on the clean
   latent. Or ``noise='forward'`` / ``'none'``: the teacher's own modes at ``timesteps``
   (``x_t = add_noise(x0, eps, t)``, or the clean latent fed with ``t``).
3. The aggregation network: each map resized bilinearly to ``output_size`` (before projecting,
   as the reference), projected by its layer's bottleneck block (1x1 reduce to
   ``projection_dim / 4``, 3x3, 1x1 expand to ``projection_dim``, GroupNorm after each conv,
   ReLU, a 1x1+GN projection shortcut when channels differ, ReLU after the add; one block per
   layer, shared by all timesteps) and summed with softmax weights over (timestep x layer).

Differences from the reference (diffusion-hyperfeatures/diffusion_hyperfeatures), on purpose:
hooks instead of replacing ``ResnetBlock2D.forward``; the VAE posterior mean by default (the
reference samples it: ``latent='sample'`` in the teacher config); float32 unless the teacher says
otherwise (the reference runs under fp16 autocast).
"""
import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from torch import nn

from common.feature_hooks import FeatureRecorder
from common.teachers.diffusion_teacher import DTYPES
from common.teachers.errors import TeacherConfigError
from .extractors import check_images

NOISE_MODES = ('ddim_inversion', 'forward', 'none')
# The paper's full model: 50 DDIM inversion steps, features at 11 of them (reference indices,
# counted from the noisy end: 49 is the clean latent).
FULL_SAVE_STEPS = (49, 45, 40, 35, 30, 25, 20, 15, 10, 5, 0)


def decoder_resnet_layers(unet):
    """``['up_blocks.{i}.resnets.{j}.conv2', ...]``: every decoder ResnetBlock2D's last residual
    conv, in forward order (up level ``i``, then block ``j``): the reference's 12 layers on SD."""
    layers = []
    for i, block in enumerate(getattr(unet, 'up_blocks', [])):
        for j, _ in enumerate(getattr(block, 'resnets', None) or []):
            layers.append(f'up_blocks.{i}.resnets.{j}.conv2')
    if not layers:
        raise TeacherConfigError(
            f'HyperfeatureExtractor: the teacher UNet ({type(unet).__name__}) has no '
            f'up_blocks.N.resnets: it is not a diffusers UNet with decoder ResnetBlock2Ds. Pass '
            f"layers=[...] (module paths of conv layers, e.g. 'up_blocks.0.resnets.0.conv2').")
    return layers


def inversion_schedule(num_train_timesteps, num_steps, steps_offset=0):
    """The DDIM inversion steps as ``(t_eval, t_next)`` lists of length ``num_steps``.

    Step ``k`` evaluates the UNet at ``t_eval[k]`` on the current latent (``-1`` for the clean
    latent of step 0, whose ``alpha_bar`` is 1) and moves it to the noise level ``t_next[k]``.
    """
    if not 1 <= int(num_steps) <= num_train_timesteps:
        raise ValueError(
            f'HyperfeatureExtractor num_inversion_steps={num_steps} must be in '
            f'1..{num_train_timesteps} (the scheduler\'s num_train_timesteps); the paper uses '
            f'50 (all steps) or 1 (one-step).')
    ratio = num_train_timesteps // int(num_steps)
    t_next = [k * ratio + int(steps_offset) for k in range(int(num_steps))]
    if t_next[-1] >= num_train_timesteps:
        raise ValueError(f'HyperfeatureExtractor steps_offset={steps_offset} pushes the last '
                         f'inversion timestep to {t_next[-1]} >= {num_train_timesteps}.')
    return [-1] + t_next[:-1], t_next


def ddim_inversion_step(x, eps, alpha, alpha_next):
    """One deterministic DDIM step (eta = 0) from noise level ``alpha`` (alpha_bar) to
    ``alpha_next``: predict ``x0`` from ``eps`` and re-noise it with the same ``eps``."""
    x0_pred = (x - (1 - alpha)**0.5 * eps) / alpha**0.5
    return alpha_next**0.5 * x0_pred + (1 - alpha_next)**0.5 * eps


# ------------------------------------------------------------------------- aggregation network
class BottleneckProjection(nn.Module):
    """A ResNet bottleneck block with GroupNorm projecting ``in_channels`` to ``out_channels``
    (the hidden width is ``out_channels // 4``); no bias in the convs (the norms have one)."""

    def __init__(self, in_channels, out_channels, num_groups=32):
        super().__init__()
        hidden = out_channels // 4
        for width in (hidden, out_channels):
            if width < 1 or width % num_groups:
                raise ValueError(
                    f'HyperfeatureAggregation: projection_dim={out_channels} gives GroupNorm '
                    f'widths {hidden} and {out_channels}, which must be multiples of '
                    f'num_norm_groups={num_groups}. Use projection_dim a multiple of '
                    f'{4 * num_groups} (the paper: 384 with 32 groups) or fewer groups.')
        self.reduce = nn.Conv2d(in_channels, hidden, 1, bias=False)
        self.reduce_norm = nn.GroupNorm(num_groups, hidden)
        self.conv = nn.Conv2d(hidden, hidden, 3, padding=1, bias=False)
        self.conv_norm = nn.GroupNorm(num_groups, hidden)
        self.expand = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self.expand_norm = nn.GroupNorm(num_groups, out_channels)
        if in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, bias=False)
            self.shortcut_norm = nn.GroupNorm(num_groups, out_channels)
        else:
            self.shortcut = self.shortcut_norm = None
        for conv in (self.reduce, self.conv, self.expand, self.shortcut):
            if conv is not None:  # MSRA fill, as detectron2's blocks
                nn.init.kaiming_normal_(conv.weight, mode='fan_out', nonlinearity='relu')

    def forward(self, x):
        out = F.relu(self.reduce_norm(self.reduce(x)))
        out = F.relu(self.conv_norm(self.conv(out)))
        out = self.expand_norm(self.expand(out))
        skip = x if self.shortcut is None else self.shortcut_norm(self.shortcut(x))
        return F.relu(out + skip)


@MODELS.register_module()
class HyperfeatureAggregation(BaseModule):
    """Mix ``T x L`` feature maps into one: per layer a :class:`BottleneckProjection` (shared
    across timesteps), each map resized to ``output_size`` first, softmax weights over all
    ``T x L`` maps.

    ``forward(features)`` takes a list of ``T`` lists of ``L`` tensors ``[B, C_l, h_l, w_l]``
    (timestep-major, as the reference's channel layout and its ``mixing_weights`` order:
    weight ``t * L + l``) and returns ``[B, projection_dim, *output_size]``.

    Args:
        in_channels (list[int]): channels of each layer.
        num_timesteps (int): how many timesteps each layer comes at.
        projection_dim (int): output channels (the paper: 384).
        output_size (int | tuple): the common grid (the paper: 64).
        num_norm_groups (int): GroupNorm groups (the paper: 32).
    """

    def __init__(self, in_channels, num_timesteps, projection_dim=384, output_size=64,
                 num_norm_groups=32, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.in_channels = [int(c) for c in in_channels]
        self.num_timesteps = int(num_timesteps)
        if not self.in_channels or self.num_timesteps < 1:
            raise ValueError(f'HyperfeatureAggregation needs at least one layer and timestep, got '
                             f'in_channels={in_channels!r}, num_timesteps={num_timesteps!r}.')
        self.projection_dim = int(projection_dim)
        self.output_size = (int(output_size), ) * 2 if isinstance(output_size, int) \
            else tuple(int(s) for s in output_size)
        self.projections = nn.ModuleList(
            [BottleneckProjection(c, self.projection_dim, num_norm_groups)
             for c in self.in_channels])
        self.mixing_weights = nn.Parameter(torch.ones(self.num_timesteps * len(self.in_channels)))

    def mixing_table(self):
        """The softmax mixing weights as ``[num_timesteps, num_layers]`` (they sum to one)."""
        return self.mixing_weights.softmax(dim=0).view(self.num_timesteps, len(self.in_channels))

    def forward(self, features):
        n_l = len(self.in_channels)
        if len(features) != self.num_timesteps or any(len(f) != n_l for f in features):
            got = [len(f) for f in features] if isinstance(features, (list, tuple)) else features
            raise ValueError(
                f'HyperfeatureAggregation expects {self.num_timesteps} timesteps x {n_l} layers '
                f'of feature maps, got {got}: the extractor\'s layers and timesteps must match '
                f'the ones the aggregation network was built (and trained) for.')
        weights = self.mixing_weights.softmax(dim=0)
        out = 0
        for t, per_layer in enumerate(features):
            for l, feat in enumerate(per_layer):
                if feat.shape[1] != self.in_channels[l]:
                    raise ValueError(
                        f'HyperfeatureAggregation: layer {l} has {feat.shape[1]} channels, '
                        f'built for {self.in_channels[l]}.')
                if tuple(feat.shape[-2:]) != self.output_size:
                    feat = F.interpolate(feat, size=self.output_size, mode='bilinear',
                                         align_corners=False)
                out = out + weights[t * n_l + l] * self.projections[l](feat)
        return out


# ----------------------------------------------------------------------------------- extractor
@MODELS.register_module()
class HyperfeatureExtractor(BaseModule):
    """Diffusion Hyperfeatures: decoder ResnetBlock2D branches of a frozen
    :class:`~common.teachers.DiffusionTeacher` at several timesteps, mixed by a trainable
    :class:`HyperfeatureAggregation` into ``[B, projection_dim, *output_size]``.

    Args:
        teacher (dict | DiffusionTeacher): the teacher config (``type='DiffusionTeacher'``; its
            ``layers`` and ``timesteps`` are set here) or one already built with ``layers``
            (and, for ``noise='forward'``/``'none'``, ``timesteps`` and ``noise``) as here.
            ``input_norm`` must be None.
        layers (list[str] | None): UNet module paths whose outputs are read (None: every
            decoder ResnetBlock2D's ``conv2``, see :func:`decoder_resnet_layers`).
        noise (str): ``'ddim_inversion'`` (the paper), ``'forward'`` or ``'none'`` (the
            teacher's modes at ``timesteps``).
        num_inversion_steps (int): DDIM inversion steps ``N`` (full model 50, one-step 1).
        save_steps (list[int]): inversion steps whose features are kept, reference indices
            ``0..N-1`` counted from the noisy end (``N-1``: the clean latent); their order is
            the aggregation's timestep order. Default: :data:`FULL_SAVE_STEPS` for ``N=50``,
            ``(N-1,)`` otherwise (the clean latent; with ``N=1`` the one-step model).
        steps_offset (int): added to every inversion timestep (the reference: 0).
        timesteps (list[int] | None): for ``'forward'``/``'none'``: the teacher's timesteps.
        input_size (str | int | tuple | None): images are resized (bilinear) to this size
            before the teacher: ``'native'`` (default) the teacher's training size
            (``teacher.native_size``: 512 for SD 1.5, the reference's fixed 512 whatever the
            loaded size), an int or ``(h, w)``, or None: as given.
        projection_dim, output_size, num_norm_groups: of the aggregation network.
    """

    def __init__(self, teacher, layers=None, noise='ddim_inversion', num_inversion_steps=50,
                 save_steps=None, steps_offset=0, timesteps=None, input_size='native',
                 projection_dim=384, output_size=64, num_norm_groups=32, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if noise not in NOISE_MODES:
            raise ValueError(f"HyperfeatureExtractor noise={noise!r} is not one of "
                             f"{NOISE_MODES}: 'ddim_inversion' is the paper's real-image "
                             f"features, 'forward'/'none' the teacher's own modes.")
        self.noise = noise
        if noise != 'ddim_inversion' and timesteps is None and isinstance(teacher, dict):
            raise ValueError(f"HyperfeatureExtractor noise={noise!r} needs timesteps=[...] "
                             f"(the teacher's timesteps, e.g. [0] for one clean step).")
        if isinstance(teacher, dict):
            teacher = self._build_teacher(dict(teacher), layers, noise, num_inversion_steps,
                                          timesteps)
        self.teacher = teacher  # holds its networks outside the module tree: no weights here
        if teacher.input_norm is not None:
            raise ValueError(
                f'HyperfeatureExtractor feeds its teacher [-1, 1] images, but the teacher has '
                f'input_norm={teacher.input_norm}: remove input_norm from the teacher config.')
        self.layers = list(layers) if layers is not None else decoder_resnet_layers(teacher.unet)
        missing = [name for name in self.layers if name not in teacher.layers]
        if missing:
            raise ValueError(f'HyperfeatureExtractor: the teacher given does not record '
                             f'{missing}; pass the teacher as a config dict (layers are then '
                             f'set in it) or build it with layers={self.layers}.')
        self._modules_by_name = {name: teacher.unet.get_submodule(name) for name in self.layers}
        channels = [self._out_channels(name, m) for name, m in self._modules_by_name.items()]

        if noise == 'ddim_inversion':
            n = int(num_inversion_steps)
            self.t_eval, self.t_next = inversion_schedule(teacher.num_train_timesteps, n,
                                                          steps_offset)
            if save_steps is None:
                save_steps = FULL_SAVE_STEPS if n == 50 else (n - 1, )
            save_steps = [int(s) for s in save_steps]
            bad = [s for s in save_steps if not 0 <= s < n]
            if bad or len(set(save_steps)) != len(save_steps) or not save_steps:
                raise ValueError(
                    f'HyperfeatureExtractor save_steps={save_steps} must be distinct inversion '
                    f'steps in 0..{n - 1} (num_inversion_steps={n}; {n - 1} is the clean '
                    f'latent): the paper keeps (49, 45, ..., 5, 0) of 50, one-step keeps (0,) '
                    f'of 1.')
            self.save_steps = save_steps
            # inversion step k = N - 1 - s of each kept reference index s
            self._kept = [n - 1 - s for s in save_steps]
            self.feature_timesteps = [self.t_eval[k] for k in self._kept]
        else:
            if teacher.noise != noise:
                raise ValueError(f'HyperfeatureExtractor noise={noise!r} but the teacher given '
                                 f'has noise={teacher.noise!r}.')
            self.save_steps = None
            self.feature_timesteps = [int(t) for t in (timesteps or teacher.timesteps)]
            absent = [t for t in self.feature_timesteps if t not in teacher.timesteps]
            if absent:
                raise ValueError(f'HyperfeatureExtractor: the teacher given does not compute '
                                 f'timesteps {absent}.')
        if input_size == 'native':
            input_size = teacher.native_size
        elif isinstance(input_size, str) or (
                isinstance(input_size, (list, tuple)) and len(input_size) != 2):
            raise ValueError(f"HyperfeatureExtractor input_size={input_size!r}: use 'native' "
                             f"(the teacher's training size), an int, (h, w) or None.")
        self.input_size = None if input_size is None else (
            (int(input_size), ) * 2 if isinstance(input_size, int)
            else tuple(int(s) for s in input_size))
        self.aggregation = HyperfeatureAggregation(
            channels, len(self.feature_timesteps), projection_dim, output_size, num_norm_groups)
        self.stride = None  # set by each forward: input pixels per output cell

    @staticmethod
    def _build_teacher(cfg, layers, noise, num_steps, timesteps):
        if layers is None:
            from common.teachers.loading import load_diffusion_components
            # the layer list needs the UNet's topology: load once, hand the parts to the teacher
            parts = load_diffusion_components(
                cfg['pretrained'], dtype=DTYPES.get(cfg.get('dtype', 'float32'), torch.float32),
                noise_schedule=cfg.get('noise_schedule'))
            cfg['pretrained'] = parts
            layers = decoder_resnet_layers(parts.unet)
        cfg['layers'] = list(layers)
        if noise == 'ddim_inversion':
            cfg['noise'] = 'none'  # never used: the inversion runs its own loop
            cfg['timesteps'] = [0]
        else:
            cfg['noise'] = noise
            cfg['timesteps'] = [int(t) for t in timesteps]
        return MODELS.build(cfg)

    @staticmethod
    def _out_channels(name, module):
        channels = getattr(module, 'out_channels', None)
        if channels is None:
            raise ValueError(f'HyperfeatureExtractor layer {name!r} is a '
                             f'{type(module).__name__} without out_channels: use conv layers '
                             f"such as 'up_blocks.0.resnets.0.conv2'.")
        return int(channels)

    # ------------------------------------------------------------------ teacher features
    def _unet_kwargs(self, x):
        teacher = self.teacher
        kwargs = {}
        if teacher._parts.is_text_conditioned:
            image_size = tuple(int(s) * teacher.vae_scale_factor for s in x.shape[-2:])
            kwargs.update(teacher._text_conditioning(x.shape[0], image_size))
        labels = teacher._class_labels(None, x.shape[0])
        if labels is not None:
            kwargs['class_labels'] = labels
        return kwargs

    @torch.no_grad()
    def ddim_inversion(self, latents, last_step=None):
        """Invert clean ``latents`` [B, ...] (the teacher's x0) with deterministic DDIM.

        Returns ``(features, trajectory)``: ``features[k] = {layer: [B, C, h, w]}`` for every
        kept inversion step ``k`` (the UNet call on ``trajectory[k]`` at ``t_eval[k]``), and the
        latents ``trajectory[0..K]`` (``trajectory[0]`` is ``latents``) up to the last step run
        (``last_step``, default the last kept one; its UNet call stops early after the hooks).
        """
        teacher = self.teacher
        kept = set(self._kept)
        last = max(self._kept) if last_step is None else int(last_step)
        alphas = teacher.noise_scheduler.alphas_cumprod.double()
        x = latents.float()
        kwargs = self._unet_kwargs(x)
        features, trajectory = {}, [x]
        for k in range(last + 1):
            t = torch.full((x.shape[0], ), self.t_eval[k], dtype=torch.long, device=x.device)
            final = k == last and last_step is None  # nothing after it: no need for eps
            with FeatureRecorder(self._modules_by_name, early_exit=final) as rec:
                out = {}
                rec_out = rec.run(lambda: out.setdefault('eps', teacher.unet(
                    x.to(teacher.compute_dtype), t, return_dict=False, **kwargs)[0]))
            if k in kept:
                features[k] = {name: f.float() for name, f in rec_out.items()}
            if final:
                break
            alpha = 1.0 if self.t_eval[k] < 0 else float(alphas[self.t_eval[k]])
            x = ddim_inversion_step(x, out['eps'].float(), alpha,
                                    float(alphas[self.t_next[k]]))
            trajectory.append(x)
        return features, trajectory

    def teacher_features(self, images):
        """The per-timestep, per-layer maps ``[[B, C_l, h_l, w_l] x L] x T`` of ``[0, 1]``
        images (already at the teacher's input size)."""
        teacher = self.teacher
        unit = images.float() * 2 - 1
        if self.noise == 'ddim_inversion':
            latents = teacher.encode(teacher.to_unit_range(unit).to(teacher.device))
            feats, _ = self.ddim_inversion(latents)
            return [[feats[k][name] for name in self.layers] for k in self._kept]
        feats = teacher(unit)
        return [[feats[f'{name}@{t}'] for name in self.layers] for t in self.feature_timesteps]

    def forward(self, images, categories=None):
        check_images(images, 'HyperfeatureExtractor')
        x = images.float()
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode='bilinear', align_corners=False)
        with torch.no_grad():
            feats = self.teacher_features(x)
        out = self.aggregation([[f.to(images.device) for f in per_t] for per_t in feats])
        self.stride = images.shape[-1] / out.shape[-1]
        return out


# ----------------------------------------------------------------- the released weights' keys
# detectron2-style names in the reference's AggregationNetwork -> ours
_REFERENCE_CONVS = dict(conv1='reduce', conv2='conv', conv3='expand', shortcut='shortcut')
_REFERENCE_PREFIXES = ('aggregation_network.', 'module.')


def convert_reference_state_dict(state):
    """The reference's ``AggregationNetwork`` state dict (the released ``aggregation_network.pt``
    once made safe) as a :class:`HyperfeatureAggregation` state dict, and what it implies.

    ``bottleneck_layers.{l}.0.conv1.weight`` -> ``projections.{l}.reduce.weight``,
    ``...conv1.norm.{weight,bias}`` -> ``projections.{l}.reduce_norm.{weight,bias}`` (conv2 ->
    ``conv``, conv3 -> ``expand``, shortcut -> ``shortcut``), ``mixing_weights`` unchanged
    (both are timestep-major, weight ``t * L + l``). Keys may carry an ``aggregation_network.``
    or ``module.`` prefix. Returns ``(state, info)`` with ``info = dict(in_channels=[...],
    num_timesteps=T, projection_dim=D)``.
    """
    out, unknown = {}, []
    for key, value in state.items():
        name = key
        for prefix in _REFERENCE_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix):]
        parts = name.split('.')
        if name == 'mixing_weights':
            out[name] = value
        elif (len(parts) in (5, 6) and parts[0] == 'bottleneck_layers' and parts[1].isdigit()
              and parts[2] == '0' and parts[3] in _REFERENCE_CONVS):
            conv = f'projections.{parts[1]}.{_REFERENCE_CONVS[parts[3]]}'
            if parts[4:] == ['weight']:
                out[f'{conv}.weight'] = value
            elif len(parts) == 6 and parts[4] == 'norm' and parts[5] in ('weight', 'bias'):
                out[f'{conv}_norm.{parts[5]}'] = value
            else:
                unknown.append(key)
        else:
            unknown.append(key)
    if unknown or 'mixing_weights' not in out:
        raise ValueError(
            f'not a Diffusion Hyperfeatures aggregation network: keys {unknown[:6]} are not '
            f'the reference\'s (mixing_weights, bottleneck_layers.L.0.conv1/conv2/conv3/'
            f'shortcut[.norm].weight|bias, one bottleneck block per layer)'
            f'{"" if "mixing_weights" in out else " and mixing_weights is missing"}. Convert the '
            f'released aggregation_network*.pt with tools/convert/legacy_checkpoint.py first and '
            f'pass its output.')
    layers = sorted({int(k.split('.')[1]) for k in out if k.startswith('projections.')})
    if layers != list(range(len(layers))) or not layers:
        raise ValueError(f'the bottleneck layers are numbered {layers}, not 0..L-1.')
    in_channels = [int(out[f'projections.{l}.reduce.weight'].shape[1]) for l in layers]
    projection_dim = int(out['projections.0.expand.weight'].shape[0])
    n_mix = int(out['mixing_weights'].numel())
    if n_mix % len(layers):
        raise ValueError(f'{n_mix} mixing weights for {len(layers)} layers: not a whole number '
                         f'of timesteps.')
    return out, dict(in_channels=in_channels, num_timesteps=n_mix // len(layers),
                     projection_dim=projection_dim)
