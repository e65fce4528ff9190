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


def allowed_globals():
    """The explicit allow-list of non-tensor classes a checkpoint may contain."""
    allowed = _numpy_globals()
    try:
        from mmengine.logging.history_buffer import HistoryBuffer
        allowed.append(HistoryBuffer)
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
        if 'Weights only load failed' in msg or 'Unsupported global' in msg or 'GLOBAL' in msg:
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


def _first_line(msg):
    for line in msg.splitlines():
        if 'Unsupported global' in line or 'GLOBAL' in line:
            return line.strip()
    return msg.splitlines()[0] if msg else ''


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
