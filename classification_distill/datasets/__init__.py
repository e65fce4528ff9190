"""Datasets of the classification subtree (registered in mmpretrain's ``DATASETS``); the digits
live in ``common.datasets.digits`` (the correspondence demo uses them too)."""
from .digits import DigitsDataset, digits_split_indices, upsample_digits

__all__ = ['DigitsDataset', 'digits_split_indices', 'upsample_digits']
