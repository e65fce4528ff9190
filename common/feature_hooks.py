"""Capture named module outputs with forward hooks and stop the forward once all are captured.

Early exit lives here, in a hook, so the UNet's own ``forward`` is never copied or changed.
"""
import difflib

import torch

from .teachers.errors import TeacherConfigError


class _AllCaptured(Exception):
    """Raised from a hook to leave the forward once every requested output is recorded."""


def resolve_modules(root, names, what='teacher UNet',
                    how_to_list='`python tools/extract_features.py CONFIG --list-layers`'):
    """Map module paths to modules; an unknown path gets the nearest valid paths in the error."""
    available = dict(root.named_modules())
    modules = {}
    for name in names:
        if name not in available:
            near = difflib.get_close_matches(name, list(available), n=6, cutoff=0.6)
            parent = name.rsplit('.', 1)[0] if '.' in name else ''
            children = [n for n in available if parent and n.startswith(parent + '.')
                        and n.count('.') == parent.count('.') + 1][:8]
            hint = near or children or [n for n in available if n and '.' not in n]
            raise TeacherConfigError(
                f'Unknown layer {name!r} in the {what} ({type(root).__name__}). Nearest valid '
                f'module paths: {hint}. List them all with {how_to_list}.')
        modules[name] = available[name]
    return modules


def _first_tensor(output):
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]  # blocks such as down_blocks.N return (hidden_states, skip_states)
    if hasattr(output, 'sample'):
        return output.sample
    raise TypeError(f'cannot record an output of type {type(output).__name__}')


class FeatureRecorder:
    """Context manager: ``with FeatureRecorder(modules, early_exit=True) as rec: rec.run(fn)``.

    Records the output of each module during ``fn()``: its first call (``keep='first'``), or its
    last (``keep='last'``, e.g. a ReLU that a residual block calls twice). With ``early_exit``
    (first calls only) the forward is interrupted as soon as all of them are recorded.
    """

    def __init__(self, modules, early_exit=True, keep='first'):
        if keep not in ('first', 'last'):
            raise ValueError(f"keep must be 'first' or 'last', got {keep!r}")
        if early_exit and keep == 'last':
            raise ValueError("early exit is only possible with keep='first'")
        self.modules = modules
        self.early_exit = early_exit
        self.keep = keep
        self.outputs = {}
        self._handles = []

    def _hook(self, name):

        def hook(module, args, output):
            if self.keep == 'last' or name not in self.outputs:
                self.outputs[name] = _first_tensor(output)
            if self.early_exit and len(self.outputs) == len(self.modules):
                raise _AllCaptured

        return hook

    def __enter__(self):
        self.outputs = {}
        self._handles = [m.register_forward_hook(self._hook(n)) for n, m in self.modules.items()]
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        self._handles = []
        return False

    def run(self, forward):
        """Call ``forward()`` and return the recorded outputs by module name."""
        try:
            forward()
        except _AllCaptured:
            pass
        missing = [n for n in self.modules if n not in self.outputs]
        if missing:
            raise TeacherConfigError(
                f'The forward never ran the modules {missing}; they exist but are not '
                f'used by this model (choose layers on the forward path).')
        return dict(self.outputs)
