"""On-disk cache of teacher features for deterministic teacher settings.

An entry is one feature map of one image, stored as a safetensors file named by a key that hashes
everything the feature depends on: the teacher's settings (noise schedule, seeds, class label,
prompt tokens, network configs...: ``DiffusionTeacher.cache_settings``), its weights'
fingerprint, the layer, the timestep and the exact input tensor (so any change of preprocessing
changes the key, and random augmentation makes every input new: see ``cache_checks``). A
stale entry can therefore never be returned. Entries carry a checksum of their tensor bytes; a
corrupt or truncated entry is detected, removed and recomputed by the caller.
"""
import hashlib
import json
import logging
import os

import torch
from mmengine.logging import print_log

from ..io.atomic import atomic_path


def tensor_digest(tensor):
    """sha256 of a tensor's dtype, shape and bytes."""
    t = tensor.detach().contiguous().cpu()
    h = hashlib.sha256(f'{t.dtype}{tuple(t.shape)}'.encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b'')
    return h.hexdigest()


def module_fingerprint(modules):
    """sha256 over the named parameters and buffers of the given modules (a dict name → module)."""
    h = hashlib.sha256()
    for prefix, module in sorted(modules.items()):
        if module is None:
            continue
        for name, tensor in sorted(module.state_dict().items()):
            h.update(f'{prefix}.{name}'.encode())
            h.update(tensor_digest(tensor).encode())
    return h.hexdigest()


def make_key(**parts):
    """A stable sha256 key from keyword parts (JSON with sorted keys)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class FeatureCache:
    """A folder of ``<key[:2]>/<key>.safetensors`` entries."""

    def __init__(self, root):
        self.root = os.path.expanduser(root)
        self.hits = 0
        self.misses = 0

    def path(self, key):
        return os.path.join(self.root, key[:2], key + '.safetensors')

    def get(self, key):
        """The cached tensor, or None when absent or corrupt (a corrupt entry is removed)."""
        from safetensors import SafetensorError
        from safetensors.torch import safe_open
        path = self.path(key)
        if not os.path.isfile(path):
            self.misses += 1
            return None
        try:
            with safe_open(path, framework='pt') as f:
                tensor = f.get_tensor('feature')
                expected = (f.metadata() or {}).get('sha256')
            if expected != tensor_digest(tensor):
                raise ValueError('checksum mismatch')
        except (SafetensorError, ValueError, OSError, RuntimeError) as err:
            print_log(f'Feature cache entry {path} is corrupt ({err}); recomputing it.',
                      logger='current', level=logging.WARNING)
            os.remove(path)
            self.misses += 1
            return None
        self.hits += 1
        return tensor

    def put(self, key, tensor):
        from safetensors.torch import save_file
        tensor = tensor.detach().contiguous().cpu()
        # No fsync: an entry lost in a crash is simply recomputed (the rename is still atomic,
        # and a torn entry fails its checksum).
        with atomic_path(self.path(key), fsync=False) as tmp:
            save_file({'feature': tensor}, tmp, metadata={'sha256': tensor_digest(tensor)})
