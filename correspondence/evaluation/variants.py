"""Variants of one correspondence config for the analysis tools: many layers, timesteps or
input sizes of one model, with the model loaded once.

The one rule: a variant changes one thing of the config and nothing else, and computes nothing
twice. A layer x timestep grid is ONE :class:`~common.teachers.DiffusionTeacher` computing every
``layer@t`` in one batched call per image batch; the per-key extractors share it through
:class:`TeacherMemo` (the last batch's features are reused while the same images come again). A
DINOv2 layer is the configured extractor with another layer (:func:`dinov2_at_layer`, the same
weights). A resolution is the config's ``ResizePair`` with another ``size``
(:func:`pipeline_with_size`), rounded to the extractor's patch multiple (:func:`patch_multiple`).

Mistakes (an unknown layer, a config without the part a tool varies) raise
:class:`VariantError`, one paragraph naming what was wrong, what is valid and the fix.
"""
import copy
import difflib
import math

import torch


class VariantError(ValueError):
    """A variant that cannot be built from this config; the message says why and the fix."""


def _extractor_type(cfg_or_module):
    if isinstance(cfg_or_module, dict) or hasattr(cfg_or_module, 'get'):
        return str(cfg_or_module.get('type', '?')).split('.')[-1]
    return type(cfg_or_module).__name__


def extractor_cfg(cfg, wanted, tool):
    """``cfg.model.extractor`` when its type is one of ``wanted``, else a :class:`VariantError`."""
    model = cfg.get('model') or {}
    extractor = model.get('extractor') if hasattr(model, 'get') else None
    kind = _extractor_type(extractor) if extractor is not None else None
    if kind not in wanted:
        raise VariantError(
            f'{tool} varies the extractor of a zero-shot config whose model.extractor is a '
            f'{" or ".join(wanted)}, but this config\'s model.extractor is {kind!r}. Pass a '
            'config such as correspondence/configs/zero_shot/dift_sd21-up1-t261-ens8_768px_'
            'spair71k.py (DiffusionExtractor) or dinov2_vitb14_840px_spair71k.py '
            '(DINOv2Extractor); for a fused SD-DINO model sweep its parts separately.')
    return extractor


# -------------------------------------------------------------------------- diffusion grids
def check_layers(unet, layers, how_to_list='tools/extract_features.py CONFIG --list-layers'):
    """Raise a :class:`VariantError` listing valid module paths unless every layer is one."""
    available = [name for name, _ in unet.named_modules() if name]
    bad = [layer for layer in layers if layer not in available]
    if not bad:
        return
    near = {b: difflib.get_close_matches(b, available, n=3, cutoff=0.6) for b in bad}
    if len(available) <= 60:
        valid, shown = available, 'all valid module paths'
    else:  # a real UNet has hundreds: the blocks and their resnets / attentions
        valid = [n for n in available if n.split('.')[0] in ('down_blocks', 'mid_block',
                                                              'up_blocks') and n.count('.') <= 3]
        shown = (f'the block-level ones of its {len(available)} module paths (all of them: '
                 f'{how_to_list})')
    hints = '; '.join(f'{b!r}: nearest {near[b]}' for b in bad if near[b])
    raise VariantError(
        f'--layers {bad} {"is" if len(bad) == 1 else "are"} not module paths of the teacher '
        f'UNet ({type(unet).__name__}){" (" + hints + ")" if hints else ""}. Use module paths '
        f'such as up_blocks.1 or up_blocks.1.resnets.0; {shown}: {valid}.')


def grid_teacher(teacher_cfg, layers, timesteps, cache_dir=None):
    """One ``DiffusionTeacher`` of ``teacher_cfg`` computing every ``layer@t`` of the grid
    (its weights loaded once; the layers checked against its UNet first)."""
    from mmengine.registry import MODELS

    from common.teachers.diffusion_teacher import DTYPES
    from common.teachers.loading import DiffusionComponents, load_diffusion_components
    cfg = copy.deepcopy(dict(teacher_cfg))
    pretrained = cfg.get('pretrained')
    if not isinstance(pretrained, DiffusionComponents):
        pretrained = load_diffusion_components(
            pretrained, dtype=DTYPES.get(cfg.get('dtype', 'float32'), torch.float32),
            noise_schedule=cfg.get('noise_schedule'))
    check_layers(pretrained.unet, layers)
    cfg.update(pretrained=pretrained, layers=list(layers), timesteps=[int(t) for t in timesteps])
    if cache_dir is not None:
        cfg['cache_dir'] = cache_dir
    cfg.setdefault('type', 'DiffusionTeacher')
    return MODELS.build(cfg)


class TeacherMemo:
    """Installed on a teacher: ``teacher(images, ...)`` returns the previous call's features
    when the images (equal values), labels and prompts are the same as last time, else runs
    the teacher (all its ``layer@t`` at once) and remembers that output. ``calls`` counts the
    real teacher runs."""

    def __init__(self, teacher):
        self.teacher = teacher
        self._forward = teacher.forward
        self.last = None
        self.calls = 0
        teacher.forward = self  # an instance attribute: nn.Module.__call__ finds it first

    @staticmethod
    def _same(a, b):
        if a is None or b is None:
            return a is b
        return (a.shape == b.shape and a.device == b.device and a.dtype == b.dtype
                and torch.equal(a, b))

    def __call__(self, images, class_labels=None, prompts=None):
        labels = None if class_labels is None else torch.as_tensor(class_labels)
        prompts_key = None if prompts is None else (
            (prompts, ) if isinstance(prompts, str) else tuple(prompts))
        if self.last is not None:
            last_images, last_labels, last_prompts, out = self.last
            if (self._same(last_images, images) and self._same(last_labels, labels)
                    and last_prompts == prompts_key):
                return out
        out = self._forward(images, class_labels, prompts)
        self.calls += 1
        self.last = (images.detach().clone(), labels, prompts_key, out)
        return out


def grid_extractors(extractor_cfg_, layers, timesteps, cache_dir=None):
    """``(teacher, {'layer@t': DiffusionExtractor})``: one extractor per grid cell, all sharing
    one memoised teacher (see :class:`TeacherMemo`); prompt template as configured."""
    from ..models.extractors import DiffusionExtractor
    teacher = grid_teacher(extractor_cfg_['teacher'], layers, timesteps, cache_dir)
    TeacherMemo(teacher)
    template = extractor_cfg_.get('prompt_template')
    extractors = {f'{layer}@{int(t)}': DiffusionExtractor(teacher, layer=layer, timestep=int(t),
                                                          prompt_template=template)
                  for layer in layers for t in timesteps}
    return teacher, extractors


# ---------------------------------------------------------------------------------- DINOv2
def dinov2_at_layer(extractor, layer, final_norm=None):
    """The built ``DINOv2Extractor`` reading block ``layer`` instead (same weights; the layer
    and final-norm rules of ``DINOv2Extractor``: 0 the patch embedding, ``i`` block ``i``,
    ``-1`` the last; ``final_norm=None`` normalises the last block only)."""
    n = int(extractor.model.config.num_hidden_layers)
    index = layer if layer >= 0 else n + 1 + layer
    if not 0 <= index <= n:
        raise VariantError(
            f'--layers {layer}: this DINOv2 has {n} blocks; valid layers are 0 (the patch '
            f'embedding), 1..{n} (the output of that block) and -1..-{n + 1} from the end.')
    clone = copy.copy(extractor)  # shares modules and buffers; own plain attributes
    clone.layer = layer
    clone.layer_index = index
    clone.final_norm = (index == n) if final_norm is None else bool(final_norm)
    clone._module_name = 'embeddings' if index == 0 else f'encoder.layer.{index - 1}'
    return clone


# ------------------------------------------------------------------------------ resolution
def patch_multiple(extractor):
    """``(multiple, why)``: the input side an extractor needs a multiple of (1: none)."""
    if hasattr(extractor, 'patch_size'):
        return int(extractor.patch_size), f'{type(extractor).__name__} patch size'
    if hasattr(extractor, 'extractors'):
        parts = [patch_multiple(e) for e in extractor.extractors]
        multiple = 1
        for m, _ in parts:
            multiple = multiple * m // math.gcd(multiple, m)
        why = ', '.join(w for m, w in parts if m > 1) or 'none'
        return multiple, f'least common multiple of its sources ({why})'
    teacher = getattr(extractor, 'teacher', None)
    if teacher is not None and getattr(teacher, 'vae_scale_factor', 1) > 1:
        return int(teacher.vae_scale_factor), 'the VAE downsampling factor (latent pixels)'
    return 1, 'none'


def round_to_multiple(size, multiple):
    """The nearest multiple of ``multiple`` to ``size`` (halves up), at least ``multiple``."""
    return max(multiple, int(math.floor(size / multiple + 0.5)) * multiple)


def resize_step(pipeline, where='the test pipeline'):
    """The index of the one ``ResizePair`` step of ``pipeline`` that has a size."""
    steps = [i for i, step in enumerate(pipeline)
             if str(step.get('type', '')).split('.')[-1] == 'ResizePair']
    if len(steps) != 1:
        raise VariantError(
            f'{where} has {len(steps)} ResizePair steps; a resolution sweep replaces the size '
            "of exactly one. Put dict(type='ResizePair', frame='stretched' or 'padded', "
            'size=S) before PackPair in test_dataloader.dataset.pipeline.')
    step = pipeline[steps[0]]
    if step.get('frame', 'original') == 'original':
        raise VariantError(
            f"{where}'s ResizePair keeps the original frame (no size to vary). Use "
            "frame='stretched' or frame='padded' with a size in the config.")
    return steps[0]


def pipeline_with_size(pipeline, size, where='the test pipeline'):
    """A deep copy of ``pipeline`` whose ``ResizePair`` has ``size`` (an int: S x S)."""
    pipeline = copy.deepcopy(list(pipeline))
    index = resize_step(pipeline, where)
    pipeline[index] = dict(pipeline[index], size=int(size))
    return pipeline
