"""Distiller parts: connectors, losses, timestep samplers and policies, training hooks."""
from .connectors import *  # noqa: F401,F403
from .hooks import EntropyDecayHook, TimestepHistogramHook
from .losses import *  # noqa: F401,F403
from .reinforce_policy import ReinforceTimestepPolicy, TimestepPolicyCNN
from .timestep_samplers import FixedTimestep, TimestepSampler, UniformTimestep

__all__ = [
    'EntropyDecayHook', 'TimestepHistogramHook', 'ReinforceTimestepPolicy', 'TimestepPolicyCNN',
    'FixedTimestep', 'TimestepSampler', 'UniformTimestep'
]
