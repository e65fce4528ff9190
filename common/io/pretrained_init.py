"""``init_cfg=dict(type='Pretrained', checkpoint=..., prefix=...)`` that says what it loaded.

Replaces mmengine's ``Pretrained`` weight initializer (in mmengine's root registry, so mmpretrain,
mmseg and mmpose configs all use it) with one that loads through the safe loader, warns with the
list of missing, unexpected and shape-mismatched keys, and fails when nothing matched at all
(the silent ``strict=False`` of the stock initializer hides exactly the mistakes a user makes:
a wrong prefix, a checkpoint of another architecture).
"""
import logging
import warnings

from mmengine.logging import print_log
from mmengine.model.weight_init import PretrainedInit, update_init_info
from mmengine.registry import WEIGHT_INITIALIZERS

from .checkpoint import state_dict_from_checkpoint
from .runner_load import PartialLoadWarning  # noqa: F401  (one warning class for both checks)


class PretrainedLoadError(RuntimeError):
    """No weight of the checkpoint could be loaded into the module."""


def select_prefix(state_dict, prefix, source='checkpoint'):
    """Keys starting with ``prefix``, with the prefix stripped; a clear error when there are none."""
    if not prefix:
        return dict(state_dict)
    if not prefix.endswith('.'):
        prefix += '.'
    selected = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not selected:
        heads = sorted({k.split('.')[0] + '.' for k in state_dict})
        raise PretrainedLoadError(
            f"No key of {source} starts with the prefix {prefix!r}. Its top-level prefixes are "
            f"{heads[:12]}. Set init_cfg's prefix to one of them (a RepFusion distillation "
            f"checkpoint keeps the student under 'student.backbone.').")
    return selected


def load_state_dict_report(module, state_dict, source='checkpoint'):
    """Load the entries of ``state_dict`` whose name and shape match ``module``'s.

    Returns a dict with the sorted key lists ``matched``, ``missing`` (in the module, not loaded),
    ``unexpected`` (in the checkpoint, unknown to the module) and ``mismatched`` (same name, other
    shape). Warns with :class:`PartialLoadWarning` when any list but ``matched`` is non-empty and
    raises :class:`PretrainedLoadError` when ``matched`` is empty.
    """
    state_dict = {(k[7:] if k.startswith('module.') else k): v for k, v in state_dict.items()}
    own = module.state_dict()
    matched, mismatched = [], []
    for key, value in state_dict.items():
        if key in own:
            if tuple(own[key].shape) == tuple(value.shape):
                matched.append(key)
            else:
                mismatched.append(f'{key} (checkpoint {tuple(value.shape)}, '
                                  f'model {tuple(own[key].shape)})')
    report = dict(
        matched=sorted(matched),
        missing=sorted(k for k in own if k not in state_dict),
        unexpected=sorted(k for k in state_dict if k not in own),
        mismatched=sorted(mismatched))
    if not matched:
        raise PretrainedLoadError(
            f'None of the {len(state_dict)} weights in {source} matches {type(module).__name__} '
            f'(e.g. checkpoint key {next(iter(state_dict), None)!r} vs model key '
            f'{next(iter(own), None)!r}). Check that the checkpoint is of this architecture and '
            f'that init_cfg.prefix selects the right sub-module.')
    module.load_state_dict({k: state_dict[k] for k in matched}, strict=False)
    problems = [f'{name} ({len(report[name])}): {", ".join(report[name][:20])}'
                + (' ...' if len(report[name]) > 20 else '')
                for name in ('missing', 'unexpected', 'mismatched') if report[name]]
    if problems:
        msg = (f'Loaded {len(matched)}/{len(own)} weights of {type(module).__name__} from '
               f'{source}; not loaded: ' + '; '.join(problems))
        print_log(msg, logger='current', level=logging.WARNING)
        warnings.warn(msg, PartialLoadWarning, stacklevel=2)
    else:
        print_log(f'Loaded all {len(matched)} weights of {type(module).__name__} from {source}',
                  logger='current')
    return report


@WEIGHT_INITIALIZERS.register_module(name='Pretrained', force=True)
class SafePretrainedInit(PretrainedInit):
    """mmengine's ``Pretrained`` initializer, loading safely and reporting what it matched."""

    def __call__(self, module):
        from mmengine.runner.checkpoint import _load_checkpoint
        checkpoint = _load_checkpoint(self.checkpoint, map_location=self.map_location)
        state_dict = select_prefix(
            state_dict_from_checkpoint(checkpoint), self.prefix, source=repr(self.checkpoint))
        source = repr(self.checkpoint) + (f' (prefix {self.prefix!r})' if self.prefix else '')
        self.last_report = load_state_dict_report(module, state_dict, source=source)
        if hasattr(module, '_params_init_info'):
            update_init_info(module, init_info=self._get_init_info())
