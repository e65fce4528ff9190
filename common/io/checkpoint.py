"""The one way this toolkit reads and writes checkpoints.

* :func:`load_checkpoint` always uses ``torch.load(weights_only=True)``: tensors, containers and an
  explicit allow-list of the metadata classes that mmengine writes into its checkpoints
  (``HistoryBuffer``, numpy arrays and scalars). Anything else (a pickled class or function, which
  could run code) is refused with :class:`UnsafeCheckpointError`; its payload never runs.
* :func:`save_checkpoint` writes through a temporary file and a rename, so a crash never leaves a
  truncated checkpoint.
* :func:`patch_mmengine` routes mmengine's local checkpoint loading and file writes through these
  two functions (mmengine 0.10.7 calls ``torch.load`` without ``weights_only``).
"""
import io
import os
import pickle
import zipfile

import numpy as np
import torch

from .atomic import atomic_path, atomic_write_bytes


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


def load_checkpoint(path, map_location='cpu'):
    """Load a ``torch.save`` file safely (``weights_only=True`` plus the allow-list).

    Raises:
        CheckpointLoadError: the file is missing, truncated or not a torch checkpoint.
        UnsafeCheckpointError: the file would need to unpickle code to load.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointLoadError(
            f'Checkpoint not found: {path!r}. Check the path (relative paths are resolved from '
            f'{os.getcwd()!r}) or pass the checkpoint produced by tools/train.py.')
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
                f'them could run arbitrary code (nothing was executed). If the file comes from a '
                f'source you trust, convert it once with an explicit converter (see '
                f'tools/convert/) into safetensors or a plain state dict. Details: '
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
    """``torch.save`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def state_dict_from_checkpoint(ckpt):
    """Return the state dict inside a loaded checkpoint (``state_dict``/``model`` key or itself)."""
    if isinstance(ckpt, dict):
        for key in ('state_dict', 'model'):
            if key in ckpt and isinstance(ckpt[key], dict):
                return ckpt[key]
    return ckpt


_PATCHED = False


def patch_mmengine():
    """Make mmengine load local checkpoints safely and write files atomically. Idempotent."""
    global _PATCHED
    if _PATCHED:
        return
    from mmengine.fileio.backends import LocalBackend
    from mmengine.runner.checkpoint import CheckpointLoader

    @CheckpointLoader.register_scheme(prefixes='', force=True)
    def load_from_local(filename, map_location):  # noqa: D401 - mmengine's loader signature
        return load_checkpoint(os.path.expanduser(filename), map_location=map_location)

    def put(self, obj, filepath):
        atomic_write_bytes(filepath, obj)

    def put_text(self, obj, filepath, encoding='utf-8'):
        atomic_write_bytes(filepath, obj.encode(encoding))

    LocalBackend.put = put
    LocalBackend.put_text = put_text
    _PATCHED = True


def bytes_of(obj):
    """Serialise ``obj`` with ``torch.save`` into bytes (for hashing and tests)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()
