"""The Runner's checkpoint loading, checked: a checkpoint that does not fit the model stops the run.

mmengine's ``Runner.load_checkpoint`` (``load_from``, ``tools/test.py``) and ``Runner.resume``
load with ``strict=False`` and only log the keys that did not match, so a checkpoint of another
model is "loaded" and the run goes on to report the accuracy of random weights.

The one rule, installed by :func:`patch_runner` (from ``common.io.patch_mmengine``):

* **resume** (``--resume``): every weight of the model must be in the checkpoint with its shape;
  otherwise :class:`CheckpointMismatchError` lists the missing ones.
* **load_from** (test, fine-tuning): :class:`CheckpointMismatchError` when no weight matches or
  when more than half of the model's weights would not be loaded (missing or of another shape),
  listing them; a smaller gap is logged and warned with :class:`PartialLoadWarning`.

BatchNorm's ``num_batches_tracked`` counters are not weights and are ignored, as mmengine does.
A module may name state that older checkpoints lack and that it can do without (e.g. a timestep
policy added later) in a class attribute ``optional_checkpoint_keys = ('timestep_sampler.', )``
(key prefixes relative to that module): such keys, when missing, are only warned about.
"""
import contextlib
import contextvars
import logging
import re
import warnings

MAX_LISTED = 20
_RESUMING = contextvars.ContextVar('diffteacher_resuming', default=False)


class CheckpointMismatchError(RuntimeError):
    """The checkpoint does not fit the model (missing or mis-shaped weights)."""


class PartialLoadWarning(UserWarning):
    """Some weights of a module were not loaded (here and by the ``Pretrained`` initializer)."""


def _is_counter(key):
    return key.endswith('num_batches_tracked')


def optional_prefixes(model):
    """Key prefixes the modules of ``model`` declare optional (``optional_checkpoint_keys``)."""
    prefixes = []
    for name, module in model.named_modules():
        for key in getattr(type(module), 'optional_checkpoint_keys', ()):
            prefixes.append(f'{name}.{key}' if name else key)
    return tuple(prefixes)


def compare_keys(model, state_dict, revise_keys=((r'^module\.', ''), )):
    """Compare ``state_dict`` with ``model.state_dict()``.

    Returns a dict of sorted key lists: ``matched`` (same name and shape), ``missing`` (in the
    model, not in the checkpoint), ``optional`` (missing, but declared optional by their
    module), ``mismatched`` (``'key (checkpoint S, model S)'``) and ``unexpected`` (in the
    checkpoint only). BatchNorm counters are left out of all lists.
    """
    revised = {}
    for key, value in state_dict.items():
        for pattern, replacement in revise_keys:
            key = re.sub(pattern, replacement, key)
        revised[key] = value
    own = {k: v for k, v in model.state_dict().items() if not _is_counter(k)}
    matched, mismatched = [], []
    for key, value in own.items():
        if key not in revised:
            continue
        theirs = getattr(revised[key], 'shape', None)
        if theirs is not None and tuple(theirs) == tuple(value.shape):
            matched.append(key)
        else:
            mismatched.append(f'{key} (checkpoint {tuple(theirs) if theirs is not None else "?"}'
                              f', model {tuple(value.shape)})')
    missing = sorted(k for k in own if k not in revised)
    optional = optional_prefixes(model)
    return dict(
        matched=sorted(matched),
        missing=[k for k in missing if not k.startswith(optional)] if optional else missing,
        optional=[k for k in missing if k.startswith(optional)] if optional else [],
        mismatched=sorted(mismatched),
        unexpected=sorted(k for k in revised if k not in own and not _is_counter(k)))


def _listing(keys):
    shown = ', '.join(keys[:MAX_LISTED])
    more = len(keys) - MAX_LISTED
    return f'{shown} (+{more} more)' if more > 0 else shown


def _gaps(report):
    parts = []
    if report['missing']:
        parts.append(f'missing ({len(report["missing"])}): {_listing(report["missing"])}')
    if report['mismatched']:
        parts.append(f'shape mismatch ({len(report["mismatched"])}): '
                     f'{_listing(report["mismatched"])}')
    if report.get('optional'):
        parts.append(f'missing, optional ({len(report["optional"])}): '
                     f'{_listing(report["optional"])}')
    return '; '.join(parts)


def check_checkpoint_fits(model, checkpoint, source, resume=False,
                          revise_keys=((r'^module\.', ''), )):
    """Raise :class:`CheckpointMismatchError` when ``checkpoint`` does not fit ``model``.

    ``resume=True``: every weight must be there. Otherwise: fails when nothing matches or when
    more than half of the model's weights would not be loaded; warns about a smaller gap.
    Returns the report of :func:`compare_keys`.
    """
    state_dict = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else {}
    report = compare_keys(model, state_dict, revise_keys)
    name = type(model).__name__
    total = sum(len(report[k]) for k in ('matched', 'missing', 'optional', 'mismatched'))
    not_loaded = len(report['missing']) + len(report['mismatched'])
    if resume and not_loaded:
        raise CheckpointMismatchError(
            f'Cannot resume from {source!r}: {not_loaded} of the {total} weights of {name} are '
            f'not in it with the right shape ({_gaps(report)}). Resuming continues a run of the '
            f'same config, so the checkpoint must be one this config wrote (work_dir/epoch_N.pth '
            f'or iter_N.pth). To start a new run from other weights, drop --resume and set '
            f'load_from, or init_cfg=dict(type=\'Pretrained\', ...) for a part of the model.')
    if not resume and not report['matched']:
        example = (f' (e.g. checkpoint key {report["unexpected"][0]!r} vs model key '
                   f'{next(iter(report["missing"]), None)!r})' if report['unexpected'] else '')
        raise CheckpointMismatchError(
            f'Checkpoint {source!r} fits none of the {total} weights of {name}{example}: '
            f'{_gaps(report)}. Testing or fine-tuning would run with random weights. Pass a '
            f'checkpoint of this config\'s model (the one tools/train.py wrote for it); for a '
            f'backbone-only or distillation checkpoint use init_cfg=dict(type=\'Pretrained\', '
            f'checkpoint=..., prefix=...) on the sub-module instead of load_from.')
    if not resume and not_loaded * 2 > total:
        raise CheckpointMismatchError(
            f'Checkpoint {source!r} leaves {not_loaded} of the {total} weights of {name} at their '
            f'random initialisation ({_gaps(report)}). Testing or fine-tuning would run a mostly '
            f'random model. Pass a checkpoint of this config\'s model; to load only a part of '
            f'it, use init_cfg=dict(type=\'Pretrained\', checkpoint=..., prefix=...) on that '
            f'sub-module.')
    if not_loaded or report['optional']:
        from mmengine.logging import print_log
        msg = (f'Checkpoint {source!r}: loaded {len(report["matched"])}/{total} weights of '
               f'{name}; not loaded: {_gaps(report)}')
        print_log(msg, logger='current', level=logging.WARNING)
        warnings.warn(msg, PartialLoadWarning, stacklevel=3)
    return report


@contextlib.contextmanager
def resuming():
    """Mark the checkpoint loads inside the block as a resume (strict check)."""
    token = _RESUMING.set(True)
    try:
        yield
    finally:
        _RESUMING.reset(token)


_PATCHED = False


def patch_runner():
    """Install the checks in mmengine's ``Runner.load_checkpoint`` and ``Runner.resume``."""
    global _PATCHED
    if _PATCHED:
        return
    from mmengine.model import is_model_wrapper
    from mmengine.runner import Runner
    from mmengine.runner.checkpoint import _load_checkpoint, _load_checkpoint_to_model

    original_resume = Runner.resume

    def resume(self, filename, *args, **kwargs):
        with resuming():
            return original_resume(self, filename, *args, **kwargs)

    def load_checkpoint(self, filename, map_location='cpu', strict=False,
                        revise_keys=[(r'^module.', '')]):  # noqa: B006 - mmengine's signature
        """mmengine's ``Runner.load_checkpoint``, plus :func:`check_checkpoint_fits`."""
        checkpoint = _load_checkpoint(filename, map_location=map_location)
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        model = self.model.module if is_model_wrapper(self.model) else self.model
        check_checkpoint_fits(model, checkpoint, filename, resume=_RESUMING.get(),
                              revise_keys=revise_keys)
        checkpoint = _load_checkpoint_to_model(model, checkpoint, strict,
                                               revise_keys=revise_keys)
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint

    resume.__doc__ = original_resume.__doc__
    Runner.resume = resume
    Runner.load_checkpoint = load_checkpoint
    _PATCHED = True
