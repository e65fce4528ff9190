"""Datasets of the classification subtree (registered in mmpretrain's ``DATASETS``)."""
from .digits import DigitsDataset, digits_split_indices, upsample_digits

__all__ = ['DigitsDataset', 'digits_split_indices', 'upsample_digits']
