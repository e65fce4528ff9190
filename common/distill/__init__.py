"""Distiller parts: connectors, losses, timestep samplers and policies, training hooks, and the
``FeatureDistiller`` that puts them together for any student (all in mmengine's root registries).
"""
from .connectors import *  # noqa: F401,F403
from .feature_distiller import FeatureDistiller, PolicyStateMissingWarning
from .hooks import EntropyDecayHook, TimestepHistogramHook
from .losses import *  # noqa: F401,F403
from .reinforce_policy import ReinforceTimestepPolicy, TimestepPolicyCNN
from .students import HFStudent
from .timestep_samplers import FixedTimestep, TimestepSampler, UniformTimestep

__all__ = [
    'EntropyDecayHook', 'TimestepHistogramHook', 'FeatureDistiller', 'HFStudent',
    'PolicyStateMissingWarning', 'ReinforceTimestepPolicy', 'TimestepPolicyCNN', 'FixedTimestep',
    'TimestepSampler', 'UniformTimestep'
]
