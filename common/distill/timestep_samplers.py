"""Which diffusion timestep each image is distilled at.

A sampler is an ``nn.Module`` with ``sample(images) -> LongTensor [B]`` and
``losses(teacher_pooled, labels) -> dict`` (empty unless it learns). ``last_timesteps`` keeps the
latest draw for logging (see :class:`TimestepHistogramHook`).
"""
import torch
from mmengine.registry import MODELS
from torch import nn


class TimestepSampler(nn.Module):
    """Base: fixed behaviour, nothing to learn."""

    learns = False

    def __init__(self, num_timesteps=1000):
        super().__init__()
        self.num_timesteps = int(num_timesteps)
        self.last_timesteps = None

    def _draw(self, batch, device):
        raise NotImplementedError

    def sample(self, images):
        t = self._draw(images.shape[0], images.device)
        self.last_timesteps = t.detach().cpu()
        return t

    def losses(self, teacher_pooled, labels):
        return {}


@MODELS.register_module()
class FixedTimestep(TimestepSampler):
    """Every image at the same timestep ``timestep``."""

    def __init__(self, timestep, num_timesteps=1000):
        super().__init__(num_timesteps)
        if not 0 <= int(timestep) < self.num_timesteps:
            raise ValueError(f'FixedTimestep timestep={timestep} is outside '
                             f'0..{self.num_timesteps - 1}.')
        self.timestep = int(timestep)

    def _draw(self, batch, device):
        return torch.full((batch, ), self.timestep, dtype=torch.long, device=device)


@MODELS.register_module()
class UniformTimestep(TimestepSampler):
    """Each image at a timestep drawn uniformly from ``[low, high)``."""

    def __init__(self, low=0, high=None, num_timesteps=1000):
        super().__init__(num_timesteps)
        high = self.num_timesteps if high is None else int(high)
        if not 0 <= int(low) < high <= self.num_timesteps:
            raise ValueError(f'UniformTimestep needs 0 <= low < high <= {self.num_timesteps}, '
                             f'got low={low}, high={high}.')
        self.low, self.high = int(low), high

    def _draw(self, batch, device):
        return torch.randint(self.low, self.high, (batch, ), device=device)
