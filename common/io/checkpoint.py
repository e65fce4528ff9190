"""The one way this toolkit reads and writes checkpoints.

* :func:`load_checkpoint` always uses ``torch.load(weights_only=True)``: tensors, containers and an
  explicit allow-list of the metadata classes that mmengine writes into its checkpoints
  (``HistoryBuffer``, numpy arrays and scalars). Anything else (a pickled class or function, which
  could run code) is refused with :class:`UnsafeCheckpointError`; its payload never runs.
* :func:`save_checkpoint` writes through a temporary file and a rename, so a crash never leaves a
  truncated checkpoint.
  ``.safetensors`` files are read with ``safetensors.torch.load_file`` (tensors only, no pickle).
* :func:`save_checkpoint` writes through a temporary file, ``fsync`` and a rename, so a crash never
  leaves a truncated checkpoint.
* :func:`patch_mmengine` routes all of mmengine's checkpoint loading (local files and every URL
  scheme, see :mod:`common.io.schemes`) and file writes (checkpoints and ``last_checkpoint``)
  through these functions (mmengine 0.10.7 calls ``torch.load`` without ``weights_only``), and
  makes the Runner check that a loaded checkpoint fits the model (:mod:`common.io.runner_load`).

Formats that need pickle are converted once, explicitly, by ``tools/convert/legacy_checkpoint.py``
(the refusal message gives the exact command).
"""
import io
import os
import os.path as osp
import pickle
import shlex
import zipfile

import numpy as np
import torch

from .atomic import atomic_path, atomic_write_bytes

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONVERTER = osp.join(REPO_ROOT, 'tools', 'convert', 'legacy_checkpoint.py')
TRUST_FLAG = '--trust-this-file'
SAFETENSORS_SUFFIX = '.safetensors'


class UnsafeCheckpointError(RuntimeError):
    """The checkpoint holds pickled objects outside the allow-list."""


class CheckpointLoadError(RuntimeError):
    """The checkpoint is missing, truncated or not a checkpoint at all."""


def _numpy_globals():
    core = getattr(np, '_core', None) or np.core
    names = [core.multiarray._reconstruct, np.ndarray, np.dtype, core.multiarray.scalar]
    # numpy 2 pickles dtypes by their class (numpy.dtypes.Float64DType, ...).
    names += [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith('DType')]
    return names


def _history_buffer_getattr(obj, name):
    """Stand-in for the ``getattr`` global, limited to HistoryBuffer's statistics methods.

    A ``HistoryBuffer`` pickles its ``statistics_methods`` (``HistoryBuffer.min``, ...), which
    pickle writes as ``getattr(HistoryBuffer, 'min')``. Allowing the real ``getattr`` would let a
    file reach any attribute of any allowed object, so only these lookups are answered.
    """
    from mmengine.logging.history_buffer import HistoryBuffer
    if obj is HistoryBuffer and name in ('min', 'max', 'current', 'mean'):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'Unsupported global: GLOBAL getattr({obj!r}, {name!r}) is not allowed (only '
        f'HistoryBuffer statistics methods are)')


def allowed_globals():
    """The explicit allow-list of non-tensor classes a checkpoint may contain."""
    # bytes: numpy pickles an empty array's data through the builtin constructor.
    allowed = _numpy_globals() + [bytes]
    try:
        from mmengine.logging.history_buffer import HistoryBuffer
        allowed.append(HistoryBuffer)
        # protocol 2 (torch.save's default) names it __builtin__, later protocols builtins
        allowed += [(_history_buffer_getattr, '__builtin__.getattr'),
                    (_history_buffer_getattr, 'builtins.getattr')]
    except ImportError:  # mmengine is optional for plain weight files
        pass
    return allowed


def converter_command(path):
    """The shell command that converts the trusted pickled checkpoint ``path`` into safetensors."""
    path = os.fspath(path)
    cwd = os.getcwd()
    tool = osp.relpath(CONVERTER, cwd) if CONVERTER.startswith(cwd + os.sep) else CONVERTER
    out = osp.splitext(path)[0] + SAFETENSORS_SUFFIX
    return ' '.join(['python', shlex.quote(tool), shlex.quote(path), shlex.quote(out), TRUST_FLAG])


def _safetensors_device(map_location):
    if isinstance(map_location, torch.device):
        return str(map_location)
    return map_location if isinstance(map_location, (str, int)) else 'cpu'


def _load_safetensors(path, map_location):
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return load_file(path, device=_safetensors_device(map_location))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointLoadError(
            f'Could not read safetensors checkpoint {path!r}: the file is truncated or is not a '
            f'safetensors file ({type(err).__name__}: {_first_line(str(err))}). Re-download or '
            f're-convert it.') from None


def load_checkpoint(path, map_location='cpu'):
    """Load a ``torch.save`` file safely (``weights_only=True`` plus the allow-list).

    A path ending in ``.safetensors`` is read with ``safetensors.torch.load_file`` and returns
    the flat state dict of tensors.

    Raises:
        CheckpointLoadError: the file is missing, truncated or not a torch checkpoint.
        UnsafeCheckpointError: the file would need to unpickle code to load.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointLoadError(
            f'Checkpoint not found: {path!r}. Check the path (relative paths are resolved from '
            f'{os.getcwd()!r}) or pass the checkpoint produced by tools/train.py.')
    if path.endswith(SAFETENSORS_SUFFIX):
        return _load_safetensors(path, map_location)
    try:
        with torch.serialization.safe_globals(allowed_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        msg = str(err)
        # torch words every weights-only failure "Weights only load failed", corrupt files too
        # ("Unsupported operand 110"); only these markers mean a refused object.
        if any(marker in msg for marker in _UNSAFE_MARKERS):
            raise UnsafeCheckpointError(
                f'Refused to load {path!r}: it contains pickled Python objects outside the '
                f'allow-list of tensors, containers and mmengine/numpy metadata, and unpickling '
                f'them could run arbitrary code (nothing was executed). Only if the file comes '
                f'from a source you trust, convert it once into safetensors with '
                f'`{converter_command(path)}` and use the .safetensors file instead (the '
                f'conversion unpickles the file, so it runs whatever code it holds). Details: '
                f'{_first_line(msg)}') from None
        raise CheckpointLoadError(_corrupt_message(path, err)) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as err:
        raise CheckpointLoadError(_corrupt_message(path, err)) from None


_UNSAFE_MARKERS = ('GLOBAL', 'Unsupported global', 'unrecognized function', 'allowlisted',
                   'blocked')
_TORCH_BOILERPLATE = ('Weights only load failed', 'Please file an issue',
                      'Check the documentation')


def _first_line(msg):
    """The informative line of an error message (not torch's weights-only boilerplate)."""
    lines = [line.strip() for line in msg.splitlines() if line.strip()]
    for line in lines:
        if any(marker in line for marker in _UNSAFE_MARKERS):
            return line
    for line in lines:
        if not line.startswith(_TORCH_BOILERPLATE):
            return line
    return lines[0] if lines else ''


def _corrupt_message(path, err):
    return (f'Could not read checkpoint {path!r}: the file is truncated or is not a PyTorch '
            f'checkpoint ({type(err).__name__}: {_first_line(str(err))}). Re-download it or '
            f'point to another file; checkpoints written by this toolkit are saved atomically, so '
            f'a partial file usually means an interrupted copy.')


def save_checkpoint(obj, path):
    """``torch.save`` to ``path`` atomically (temporary file in the same folder, fsync, rename)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def state_dict_from_checkpoint(ckpt):
    """Return the state dict inside a loaded checkpoint (``state_dict``/``model`` key or itself)."""
    if isinstance(ckpt, dict):
        for key in ('state_dict', 'model'):
            if key in ckpt and isinstance(ckpt[key], dict):
                return ckpt[key]
    return ckpt


def load_from_local(filename, map_location=None):
    """mmengine's loader for local paths: :func:`load_checkpoint` (``~`` expanded)."""
    return load_checkpoint(os.path.expanduser(filename), map_location=map_location)


_PATCHED = False


def patch_mmengine():
    """Make mmengine load checkpoints safely, check what it loads and write files atomically.

    Idempotent. Installs: the safe loader for local files and every URL scheme (and a guard that
    refuses loaders registered by others), atomic writes of mmengine's ``LocalBackend`` and of
    ``CheckpointHook``'s ``last_checkpoint`` file, and the Runner's key checks on ``resume`` and
    ``load_from`` (:mod:`common.io.runner_load`).
    """
    global _PATCHED
    if _PATCHED:
        return
    import mmengine.runner.checkpoint as mmengine_checkpoint
    from mmengine.fileio.backends import LocalBackend

    from . import runner_load, schemes

    loader = mmengine_checkpoint.CheckpointLoader
    loader.register_scheme(prefixes='', loader=load_from_local, force=True)
    mmengine_checkpoint.load_from_local = load_from_local
    schemes.register_safe_schemes(loader, mmengine_checkpoint)
    schemes.guard_checkpoint_loader(loader)

    def put(self, obj, filepath):
        atomic_write_bytes(filepath, obj)

    def put_text(self, obj, filepath, encoding='utf-8'):
        atomic_write_bytes(filepath, obj.encode(encoding))

    LocalBackend.put = put
    LocalBackend.put_text = put_text
    _patch_last_checkpoint_write()
    runner_load.patch_runner()
    _PATCHED = True


def _patch_last_checkpoint_write():
    """``CheckpointHook`` writes ``work_dir/last_checkpoint`` atomically.

    mmengine 0.10.7 writes it with a plain ``open(..., 'w')`` at the end of
    ``_save_checkpoint_with_step``; a crash there leaves an empty file and ``--resume`` then
    finds no checkpoint. The method below is mmengine's, with that one write made atomic.
    """
    from mmengine.dist import is_main_process
    from mmengine.hooks import CheckpointHook

    from .atomic import atomic_write_text

    def _save_checkpoint_with_step(self, runner, step, meta):
        if self.max_keep_ckpts > 0:
            if len(self.keep_ckpt_ids) > 0 and self.keep_ckpt_ids[-1] == step:
                pass
            else:
                if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                    _step = self.keep_ckpt_ids.popleft()
                    if is_main_process():
                        ckpt_path = self.file_backend.join_path(
                            self.out_dir, self.filename_tmpl.format(_step))
                        if self.file_backend.isfile(ckpt_path):
                            self.file_backend.remove(ckpt_path)
                        elif self.file_backend.isdir(ckpt_path):
                            self.file_backend.rmtree(ckpt_path)
                self.keep_ckpt_ids.append(step)
                runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir, ckpt_filename, self.file_client_args,
            save_optimizer=self.save_optimizer, save_param_scheduler=self.save_param_scheduler,
            meta=meta, by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        atomic_write_text(osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)

    CheckpointHook._save_checkpoint_with_step = _save_checkpoint_with_step


def bytes_of(obj):
    """Serialise ``obj`` with ``torch.save`` into bytes (for hashing and tests)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()
