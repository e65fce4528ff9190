"""Trainable students for correspondence distillation (DistillDIFT): extractors that learn.

The one rule: a student obeys the extractor contract (``student(images [B, 3, H, W] in [0, 1],
categories=None) -> [B, C, h, w]``) *with autograd*, and in every mode exactly the parameters
that mode names require grad; everything else is frozen and stays in eval mode. A student's
checkpoint is its plain ``state_dict()``: build the same config again and
``load_state_dict(strict=True)``.

Modes (``mode=``), the same for both backbones:

* ``'lora'``: LoRA adapters (through ``peft``) on the attention projections named by
  ``lora['targets']``; only the ``lora_A``/``lora_B`` factors train. The wrapped projection
  weights stay frozen (DistillDIFT's release code also trained them, see the reference notes
  §1.6); dropout acts on the LoRA input (peft's placement, not the release code's dropout on the
  frozen projection's output). ``lora_B`` starts at zero, so a fresh LoRA student computes
  exactly its frozen extractor's features.
* ``'full'``: every backbone weight trains.
* ``'upscaler'``: frozen backbone, trainable ``head`` (default :class:`UpscalerHead`, x2).
* ``'frozen'``: nothing trains; the features of the plain extractor.

A ``head`` given in the other modes is applied after the backbone (and trains, except in
``'frozen'``). Students:

* :class:`DINOv2Student`: a :class:`~correspondence.models.extractors.DINOv2Extractor` that
  trains (DistillDIFT's student: DINOv2-B/14 + registers, LoRA rank 8 on q and v).
* :class:`DiffusionStudent`: the UNet of a :class:`~common.teachers.DiffusionTeacher` as a
  trainable extractor (Stable Diffusion, or a pixel DDPM). The UNet is adopted into the
  student's module tree (so it is in ``state_dict()`` and ``parameters()``); the VAE and text
  encoders stay held by the teacher, frozen, outside it.
"""
import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from torch import nn

from common.feature_hooks import resolve_modules

from .extractors import DiffusionExtractor, DINOv2Extractor, check_images

MODES = ('lora', 'full', 'upscaler', 'frozen')
LORA_KEYS = ('rank', 'alpha', 'targets', 'dropout')
DINOV2_LORA = dict(rank=8, alpha=8, targets=('query', 'value'), dropout=0.05)
DIFFUSION_LORA = dict(rank=8, alpha=8, targets=('to_q', 'to_v'), dropout=0.0)
# DINOv2 attention projections by target name: module paths inside one block (transformers 5
# names first, then the names of transformers 4).
DINOV2_TARGETS = dict(query=('attention.q_proj', 'attention.attention.query'),
                      key=('attention.k_proj', 'attention.attention.key'),
                      value=('attention.v_proj', 'attention.attention.value'),
                      output=('attention.o_proj', 'attention.output.dense'))


def _check_mode(mode, who):
    if mode not in MODES:
        raise ValueError(
            f'{who} mode={mode!r} is not one of {MODES}: \'lora\' trains LoRA adapters only, '
            f'\'full\' the whole backbone, \'upscaler\' a head on the frozen backbone, '
            f'\'frozen\' nothing. Set mode to one of them.')


def _lora_options(lora, defaults, who):
    """``lora`` merged over ``defaults``, checked (unknown keys, rank, targets)."""
    lora = dict(defaults, **(lora or {}))
    unknown = sorted(set(lora) - set(LORA_KEYS))
    if unknown:
        raise ValueError(f'{who} lora has unknown keys {unknown}; the keys are {LORA_KEYS}, '
                         f'e.g. lora=dict(rank=8, alpha=8, targets={defaults["targets"]!r}, '
                         f'dropout={defaults["dropout"]}).')
    if int(lora['rank']) < 1 or not 0 <= float(lora['dropout']) < 1:
        raise ValueError(f'{who} lora rank={lora["rank"]!r} must be >= 1 and dropout='
                         f'{lora["dropout"]!r} in [0, 1).')
    targets = lora['targets']
    lora['targets'] = (targets, ) if isinstance(targets, str) else tuple(targets)
    if not lora['targets']:
        raise ValueError(f'{who} lora targets is empty: name at least one projection, e.g. '
                         f'{defaults["targets"]!r}.')
    return lora


def _inject_lora(model, module_names, lora):
    """peft LoRA adapters on exactly ``module_names`` of ``model`` (in place); then only the
    LoRA factors require grad."""
    from peft import LoraConfig, inject_adapter_in_model
    config = LoraConfig(r=int(lora['rank']), lora_alpha=float(lora['alpha']),
                        lora_dropout=float(lora['dropout']), bias='none',
                        target_modules=list(module_names))
    inject_adapter_in_model(config, model)
    for name, param in model.named_parameters():
        param.requires_grad_('lora_' in name)


def _set_lora_dropout_mode(model, mode):
    """Put only the LoRA dropouts of ``model`` in train/eval mode (the rest stays as it is)."""
    for name, module in model.named_modules():
        if name.rsplit('.', 1)[-1] == 'lora_dropout':
            module.train(mode)


def _check_float32(dtype, mode, who, where):
    if mode in ('lora', 'full') and dtype != torch.float32:
        raise ValueError(
            f'{who} mode={mode!r} trains weights of the backbone, which is held in '
            f'{str(dtype).replace("torch.", "")}; optimising half-precision weights loses the '
            f'small updates. Set dtype=\'float32\' {where} and train with mixed precision '
            f"(optim_wrapper=dict(type='AmpOptimWrapper', ...)) instead.")


def _build_head(head, default, who):
    if head is None:
        head = default
    if head is None:
        return None
    head = MODELS.build(head) if isinstance(head, dict) else head
    if not isinstance(head, nn.Module):
        raise TypeError(f'{who} head must be a config dict or an nn.Module, got '
                        f'{type(head).__name__}.')
    return head


class _StudentMixin:
    """Shared bookkeeping: the trainable parameter names and the head's stride factor."""

    def trainable_parameter_names(self):
        """Names (as in ``named_parameters()``) of the parameters that require grad."""
        return [name for name, p in self.named_parameters() if p.requires_grad]

    def _apply_head(self, feats):
        return feats if self.head is None else self.head(feats)

    def _head_scale(self):
        return float(getattr(self.head, 'scale', 1)) if self.head is not None else 1.0


# -------------------------------------------------------------------------------------- the head
@MODELS.register_module()
class UpscalerHead(BaseModule):
    """Bilinear upsampling by ``scale``, then a small convolutional refinement added residually.

    ``out = P(up(x)) + conv3x3(GELU(conv3x3(up(x))))`` where ``up`` is bilinear
    (``align_corners=False``) and ``P`` is the identity, or a 1x1 projection when
    ``out_channels != in_channels``. The last conv is zero-initialised, so a fresh head returns
    exactly ``P(up(x))`` (the upsampled features themselves when the channels are kept).

    Args:
        in_channels (int): channels of the features it receives.
        scale (int | float): upsampling factor (>= 1; the grid becomes ``floor(h * scale)``).
        hidden_channels (int | None): width of the refinement (default ``in_channels``).
        out_channels (int | None): output channels (default ``in_channels``).
    """

    def __init__(self, in_channels, scale=2, hidden_channels=None, out_channels=None,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if not isinstance(scale, (int, float)) or scale < 1:
            raise ValueError(f'UpscalerHead scale={scale!r} must be a number >= 1 (2 doubles '
                             f'the feature grid, 1 keeps it).')
        self.in_channels = int(in_channels)
        self.scale = scale
        hidden = int(hidden_channels or in_channels)
        self.out_channels = int(out_channels or in_channels)
        self.project = (nn.Conv2d(self.in_channels, self.out_channels, 1)
                        if self.out_channels != self.in_channels else None)
        self.refine = nn.Sequential(
            nn.Conv2d(self.in_channels, hidden, 3, padding=1), nn.GELU(),
            nn.Conv2d(hidden, self.out_channels, 3, padding=1))
        self._zero_last()

    def _zero_last(self):
        nn.init.zeros_(self.refine[-1].weight)
        nn.init.zeros_(self.refine[-1].bias)

    def init_weights(self):
        """mmengine's init (``init_cfg``) may redraw the convs; the last one is zeroed again,
        so an initialised head still starts as the plain upsampling."""
        fresh = not self.is_init
        super().init_weights()
        if fresh:
            self._zero_last()

    def forward(self, feats):
        if not torch.is_tensor(feats) or feats.dim() != 4 or feats.shape[1] != self.in_channels:
            what = tuple(feats.shape) if torch.is_tensor(feats) else type(feats).__name__
            raise ValueError(
                f'UpscalerHead(in_channels={self.in_channels}) takes features [B, '
                f'{self.in_channels}, h, w], got {what}. Set in_channels to the backbone\'s '
                f'feature channels.')
        h, w = feats.shape[-2:]
        size = (int(h * self.scale), int(w * self.scale))
        up = feats if size == (h, w) else F.interpolate(feats, size=size, mode='bilinear',
                                                        align_corners=False)
        residual = up if self.project is None else self.project(up)
        return residual + self.refine(up)


# ----------------------------------------------------------------------------------------- DINOv2
@MODELS.register_module()
class DINOv2Student(_StudentMixin, DINOv2Extractor):
    """A :class:`DINOv2Extractor` that trains (see the module docstring for the modes).

    LoRA ``targets`` are among ``'query'``, ``'key'``, ``'value'`` and ``'output'`` (the attention
    output projection), adapted in every block; DistillDIFT: rank 8, alpha 8, q and v, dropout
    0.05. With ``rank`` r, a target of ``d_in -> d_out`` adds ``r * (d_in + d_out)`` parameters
    per block (ViT-B, q and v, 12 blocks: 294,912).

    Args:
        pretrained, config, layer, final_norm, dtype: as :class:`DINOv2Extractor`
            (``dtype`` must be 'float32' when backbone weights train).
        mode (str): ``'lora'`` (default), ``'full'``, ``'upscaler'`` or ``'frozen'``.
        lora (dict): ``rank``, ``alpha``, ``targets``, ``dropout`` (missing keys: the defaults).
        head (dict | nn.Module | None): applied to the features; default in ``'upscaler'``
            mode ``UpscalerHead(hidden_size, scale=2)``.
    """

    def __init__(self, pretrained=None, config=None, layer=-1, final_norm=None, mode='lora',
                 lora=None, head=None, dtype='float32', init_cfg=None):
        _check_mode(mode, 'DINOv2Student')
        super().__init__(pretrained=pretrained, layer=layer, final_norm=final_norm,
                         config=config, frozen=True, dtype=dtype, init_cfg=init_cfg)
        _check_float32(self.compute_dtype, mode, 'DINOv2Student', 'in the student config')
        self.mode = mode
        self.lora = None
        if mode == 'lora':
            self.lora = _lora_options(lora, DINOV2_LORA, 'DINOv2Student')
            _inject_lora(self.model, self._lora_modules(self.lora['targets']), self.lora)
        elif mode == 'full':
            self.model.requires_grad_(True)
        # The extractor's forward runs the backbone with autograd only when not frozen.
        self.frozen = mode in ('upscaler', 'frozen')
        channels = int(self.model.config.hidden_size)
        self.head = _build_head(
            head, dict(type='UpscalerHead', in_channels=channels, scale=2)
            if mode == 'upscaler' else None, 'DINOv2Student')
        if self.head is not None:
            self.head.requires_grad_(mode != 'frozen')
        self.stride = self.patch_size / self._head_scale()
        self.train(self.training)

    def _lora_modules(self, targets):
        """Full module paths of the LoRA targets in every block."""
        blocks = self.model.encoder.layer
        names = dict(self.model.named_modules())
        resolved = {}
        for target in targets:
            paths = [p for p in DINOV2_TARGETS.get(target, ()) if 'encoder.layer.0.' + p in names]
            if not paths:
                existing = [n for n, m in names.items()
                            if n.startswith('encoder.layer.0.') and isinstance(m, nn.Linear)]
                raise ValueError(
                    f'DINOv2Student lora target {target!r} is not one of '
                    f'{tuple(DINOV2_TARGETS)} (the attention projections query, key, value and '
                    f'the attention output). The linear layers of a block of this model are '
                    f'{existing}. Set lora=dict(targets=(...)) to names from '
                    f'{tuple(DINOV2_TARGETS)}.')
            resolved[target] = paths[0]
        return [f'encoder.layer.{i}.{resolved[t]}' for i in range(len(blocks)) for t in targets]

    def train(self, mode=True):
        nn.Module.train(self, mode)
        if self.mode != 'full':
            self.model.eval()  # frozen weights: their dropout / drop-path stay off
        if self.mode == 'lora':
            _set_lora_dropout_mode(self.model, mode)
        if self.head is not None and self.mode == 'frozen':
            self.head.eval()
        return self

    def forward(self, images, categories=None):
        check_images(images, 'DINOv2Student')
        return self._apply_head(super().forward(images, categories))


# -------------------------------------------------------------------------------------- diffusion
def _linear_suffix(name):
    """How a LoRA target names a linear layer: its last path component, or the last two when the
    last is an index (``'to_out.0'``)."""
    parts = name.split('.')
    return '.'.join(parts[-2:]) if parts[-1].isdigit() and len(parts) > 1 else parts[-1]


@MODELS.register_module()
class DiffusionStudent(_StudentMixin, DiffusionExtractor):
    """The UNet of a :class:`~common.teachers.DiffusionTeacher` as a trainable extractor of one
    ``layer@t`` (see the module docstring for the modes).

    The forward is the teacher's own (VAE posterior, its seeded noise and ensemble, its
    ``add_noise``, its hooked UNet pass with early exit), run with autograd through the UNet. The
    UNet is adopted: it becomes ``self.unet`` (trained, saved), and a teacher object passed in
    is changed with it (LoRA layers are injected into its UNet): pass a config dict for a
    teacher of the student's own. The teacher's feature cache cannot be used (``cache_dir``
    must be None). LoRA ``targets`` name linear layers by their last path component (or the last
    two for an index): ``'to_q'``, ``'to_k'``, ``'to_v'``, ``'to_out.0'``; every linear layer of
    the UNet with that name is adapted (self- and cross-attention alike).

    Args:
        teacher, layer, timestep, prompt_template, combine: as :class:`DiffusionExtractor`;
            the trainable modes ('lora', 'full') take exactly one layer and one timestep.
        mode (str): ``'lora'`` (default), ``'full'``, ``'upscaler'`` or ``'frozen'``; the teacher's
            ``dtype`` must be 'float32' when UNet weights train.
        lora (dict): ``rank``, ``alpha``, ``targets``, ``dropout`` (missing keys: the defaults).
        head (dict | nn.Module | None): applied to the features; required in ``'upscaler'``
            mode unless the feature channels can be read from the layer (then
            ``UpscalerHead(C, scale=2)``).
    """

    def __init__(self, teacher, layer=None, timestep=None, prompt_template=None, mode='lora',
                 lora=None, head=None, combine='concat', init_cfg=None):
        _check_mode(mode, 'DiffusionStudent')
        if isinstance(teacher, dict) and teacher.get('cache_dir') is not None:
            raise ValueError(self._cache_message(teacher['cache_dir']))
        super().__init__(teacher, layer=layer, timestep=timestep,
                         prompt_template=prompt_template, combine=combine, init_cfg=init_cfg)
        teacher = self.teacher
        if teacher.cache is not None:
            raise ValueError(self._cache_message(teacher.cache))
        _check_float32(teacher.compute_dtype, mode, 'DiffusionStudent', 'in the teacher config')
        keys = getattr(self, 'keys', [self.key])
        if mode in ('lora', 'full') and len(keys) > 1:
            raise ValueError(
                f'DiffusionStudent mode={mode!r} trains through one layer@t feature, but this '
                f'config asks for {keys}. Give one layer and one timestep (layer=..., '
                f"timestep=...), or use mode='upscaler' / 'frozen', which combine several.")
        self.mode = mode
        self.unet = teacher.unet  # adopted: now in this module tree and state_dict
        self.lora = None
        if mode == 'lora':
            self.lora = _lora_options(lora, DIFFUSION_LORA, 'DiffusionStudent')
            _inject_lora(self.unet, self._lora_modules(self.lora['targets']), self.lora)
            # a target may be (inside) the recorded layer itself: hook the adapted modules
            teacher._layer_modules = resolve_modules(self.unet, teacher.layers)
        elif mode == 'full':
            self.unet.requires_grad_(True)
        self.head = _build_head(
            head, self._default_head() if mode == 'upscaler' and head is None else None,
            'DiffusionStudent')
        if self.head is not None:
            self.head.requires_grad_(mode != 'frozen')
        self.train(self.training)

    @staticmethod
    def _cache_message(cache):
        return (f'DiffusionStudent: the teacher has a feature cache ({cache!r}), but a student\'s '
                f'features change as it trains (and in no mode does it read a cache). Remove '
                f'cache_dir from the teacher config of the student.')

    def _default_head(self):
        module = self.unet.get_submodule(self.layer)
        convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
        channels = getattr(module, 'out_channels', None) or (convs[-1].out_channels
                                                             if convs else None)
        layers = getattr(self, 'layers', [self.layer])
        if len(set(layers)) > 1 and getattr(self, 'combine', 'concat') == 'concat':
            channels = None  # the concatenation's width is not one layer's
        if channels is None:
            raise ValueError(
                f'DiffusionStudent mode=\'upscaler\' could not read the channels of the features '
                f'{getattr(self, "keys", [self.key])}: give the head explicitly, e.g. '
                f"head=dict(type='UpscalerHead', in_channels=C, scale=2) with C their channels.")
        return dict(type='UpscalerHead', in_channels=int(channels), scale=2)

    def _lora_modules(self, targets):
        linear = [n for n, m in self.unet.named_modules() if isinstance(m, nn.Linear)]
        names = []
        for target in targets:
            found = [n for n in linear if _linear_suffix(n) == target]
            if not found:
                existing = sorted(set(map(_linear_suffix, linear)))
                raise ValueError(
                    f'DiffusionStudent lora target {target!r} names no linear layer of this '
                    f'UNet ({type(self.unet).__name__}). Its linear layers are named {existing} '
                    f"(attention projections: 'to_q', 'to_k', 'to_v', 'to_out.0'). Set "
                    f'lora=dict(targets=(...)) to some of them.')
            names += found
        return names

    def train(self, mode=True):
        nn.Module.train(self, mode)
        self.unet.train(mode and self.mode == 'full')
        if self.mode == 'lora':
            _set_lora_dropout_mode(self.unet, mode)
        if self.head is not None and self.mode == 'frozen':
            self.head.eval()
        return self

    def _trainable_features(self, images, categories):
        """The teacher's own feature computation (posterior, seeded noise, ensemble mean), with
        autograd through the UNet this student holds."""
        teacher = self.teacher
        n = len(images)
        prompts = teacher._check_prompts(self.prompts(categories, n), n)
        # the frozen VAE needs no gradient (_posterior runs under no_grad)
        x0, std = teacher._posterior(teacher.to_unit_range(images.float() * 2 - 1)
                                     .to(teacher.device))
        t = torch.full((n, ), self.timestep, dtype=torch.long)
        return teacher._features(x0, t, teacher._class_labels(None, n), std,
                                 prompts)[self.layer]

    def forward(self, images, categories=None):
        check_images(images, 'DiffusionStudent')
        if self.mode in ('lora', 'full'):
            feats = self._trainable_features(images, categories)
        else:
            feats = super().forward(images, categories)  # the teacher's frozen pass
        self.stride = images.shape[-1] / feats.shape[-1]
        out = self._apply_head(feats)
        self.stride = images.shape[-1] / out.shape[-1]
        return out
