"""Datasets of the generation subtree: what a generator's test loop iterates over.

Importing this package registers :class:`GenerationSeedsDataset` in mmengine's root ``DATASETS``.
"""
from .seeds import GenerationSeedsDataset, GenerationSeedsError, seed_labels

__all__ = ['GenerationSeedsDataset', 'GenerationSeedsError', 'seed_labels']
