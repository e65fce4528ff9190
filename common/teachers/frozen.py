"""Base for teachers: frozen networks held outside the module tree.

The wrapped networks are kept in a plain dict, not registered as submodules, so their weights
never appear in ``state_dict()`` or ``parameters()``: never written into a student checkpoint,
never handed to an optimizer or broadcast by DDP. ``.to(device)`` on the owner still moves them
(``_apply`` is forwarded) while they keep their configured dtype, and ``train()`` leaves them in
eval mode.
"""
import torch
from mmengine.model import BaseModule


class FrozenTeacherBase(BaseModule):
    """Subclasses call :meth:`_hold` with their networks and set ``compute_dtype``."""

    compute_dtype = torch.float32

    def _hold(self, **networks):
        self.__dict__.setdefault('_held', {})
        for name, net in networks.items():
            if net is not None:
                net.eval().requires_grad_(False)
            self._held[name] = net

    def held_networks(self):
        """The frozen networks by name (None entries skipped)."""
        return {k: v for k, v in self.__dict__.get('_held', {}).items() if v is not None}

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        for net in self.held_networks().values():
            net._apply(fn, *args, **kwargs)
            if any(p.dtype != self.compute_dtype for p in net.parameters()):
                net.to(dtype=self.compute_dtype)  # keeps its dtype whatever the owner's
        self._on_moved()
        return self

    def _on_moved(self):
        """Hook for subclasses that cache device tensors."""

    def train(self, mode=True):
        super().train(mode)
        for net in self.held_networks().values():
            net.eval()
        return self

    @property
    def device(self):
        for net in self.held_networks().values():
            for p in net.parameters():
                return p.device
        return torch.device('cpu')
