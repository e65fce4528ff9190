from .atomic import atomic_path, atomic_write_bytes
from .checkpoint import (CheckpointLoadError, UnsafeCheckpointError, load_checkpoint,
                         patch_mmengine, save_checkpoint, state_dict_from_checkpoint)

__all__ = [
    'atomic_path', 'atomic_write_bytes', 'CheckpointLoadError', 'UnsafeCheckpointError',
    'load_checkpoint', 'patch_mmengine', 'save_checkpoint', 'state_dict_from_checkpoint'
]
