"""Safe checkpoint IO: the one way this toolkit reads, checks and writes checkpoints and files.

The one rule: every checkpoint is read by :func:`load_checkpoint` (``weights_only=True`` with an
explicit allow-list, or safetensors), whatever the path or URL scheme, and every file is written
through :func:`atomic_path` (temporary file, fsync, rename). ``patch_mmengine`` (run by
``import common``) routes mmengine's loading and writing through them.
"""
from .atomic import atomic_path, atomic_write_bytes, atomic_write_text
from .checkpoint import (CheckpointLoadError, UnsafeCheckpointError, converter_command,
                         load_checkpoint, patch_mmengine, save_checkpoint,
                         state_dict_from_checkpoint)
from .runner_load import CheckpointMismatchError, PartialLoadWarning, check_checkpoint_fits

__all__ = [
    'atomic_path', 'atomic_write_bytes', 'atomic_write_text', 'CheckpointLoadError',
    'CheckpointMismatchError', 'UnsafeCheckpointError', 'PartialLoadWarning',
    'check_checkpoint_fits', 'converter_command', 'load_checkpoint', 'patch_mmengine',
    'save_checkpoint', 'state_dict_from_checkpoint'
]
