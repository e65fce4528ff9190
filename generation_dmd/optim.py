"""``DMDOptimWrapperConstructor``: a DMD distiller's two optimizers as one ``OptimWrapperDict``.

mmengine's runner builds a single optimizer unless a constructor returns an ``OptimWrapperDict``.
This one gives ``generator`` (the one-step generator's parameters) and ``fake_score`` (the fake
score's and, when the GAN is on, the discriminator head's parameters: DMD2 trains them together
with one optimizer). The frozen teacher is never in either: it is not in the module tree.

The one rule: the config names exactly the two wrappers, each a normal mmengine optim wrapper
config (``type``, ``optimizer``, ``clip_grad``, ``accumulative_counts``, and an optional
``paramwise_cfg`` of its own)::

    optim_wrapper = dict(
        constructor='DMDOptimWrapperConstructor',
        generator=dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=5e-5)),
        fake_score=dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=5e-5)))

Parameter schedulers: a list applies to both wrappers; ``dict(generator=[...], fake_score=[...])``
gives each its own (mmengine's runner builds one list per wrapper key).
"""
import difflib

import torch
from mmengine.model import is_model_wrapper
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapperDict
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS

WRAPPER_KEYS = ('generator', 'fake_score')


class DMDOptimConfigError(ValueError):
    """The optim_wrapper config of a DMD distiller is incomplete or misspelt."""


def _bare(module):
    return module.module if is_model_wrapper(module) else module


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class DMDOptimWrapperConstructor:
    """Build ``OptimWrapperDict(generator=..., fake_score=...)`` for a ``DMDDistiller``."""

    def __init__(self, optim_wrapper_cfg, paramwise_cfg=None):
        cfg = dict(optim_wrapper_cfg)
        if paramwise_cfg is not None:
            raise DMDOptimConfigError(
                'DMDOptimWrapperConstructor: a top-level paramwise_cfg would apply to both '
                'optimizers; put it inside generator=dict(...) and/or fake_score=dict(...) '
                'instead.')
        unknown = sorted(set(cfg) - set(WRAPPER_KEYS))
        missing = [k for k in WRAPPER_KEYS if k not in cfg]
        if unknown or missing:
            hints = ''.join(
                f' ({k!r}: did you mean {near[0]!r}?)' for k in unknown
                for near in [difflib.get_close_matches(k, WRAPPER_KEYS, n=1, cutoff=0.5)] if near)
            raise DMDOptimConfigError(
                f'DMDOptimWrapperConstructor: optim_wrapper must hold exactly the keys '
                f'{list(WRAPPER_KEYS)} (besides constructor), each an optim wrapper config such '
                f'as dict(type=\'OptimWrapper\', optimizer=dict(type=\'AdamW\', lr=5e-5)); '
                + (f'missing {missing}' if missing else '')
                + ('; ' if missing and unknown else '')
                + (f'unknown {unknown}{hints}' if unknown else '')
                + '. Fix optim_wrapper in the config.')
        for key in WRAPPER_KEYS:
            part = cfg[key]
            if not isinstance(part, dict) or 'optimizer' not in part:
                raise DMDOptimConfigError(
                    f'DMDOptimWrapperConstructor: optim_wrapper.{key} is {part!r}; expected an '
                    f'optim wrapper config with an optimizer, e.g. dict(type=\'OptimWrapper\', '
                    f'optimizer=dict(type=\'AdamW\', lr=5e-5, weight_decay=0.01)).')
        self.cfgs = {key: dict(cfg[key]) for key in WRAPPER_KEYS}

    def __call__(self, model):
        model = _bare(model)
        parts = {name: getattr(model, name, None) for name in WRAPPER_KEYS}
        if not all(isinstance(p, torch.nn.Module) for p in parts.values()):
            raise DMDOptimConfigError(
                f'DMDOptimWrapperConstructor builds optimizers for a model with generator and '
                f'fake_score submodules (DMDDistiller); {type(model).__name__} lacks '
                f'{[k for k, v in parts.items() if not isinstance(v, torch.nn.Module)]}.')
        fake = torch.nn.ModuleDict(dict(fake_score=_bare(parts['fake_score'])))
        discriminator = getattr(model, 'discriminator', None)
        if discriminator is not None:
            fake['discriminator'] = _bare(discriminator)
        modules = dict(generator=_bare(parts['generator']), fake_score=fake)
        wrappers = {}
        for key in WRAPPER_KEYS:
            cfg = dict(self.cfgs[key])
            paramwise = cfg.pop('paramwise_cfg', None)
            wrappers[key] = DefaultOptimWrapperConstructor(cfg, paramwise)(modules[key])
        return OptimWrapperDict(**wrappers)
