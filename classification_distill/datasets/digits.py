"""Moved to :mod:`common.datasets.digits` (the classification and correspondence demos both
use the digits); this re-export keeps ``classification_distill.datasets.digits`` imports
working."""
from common.datasets.digits import (INTERPOLATIONS, NUM_CLASSES, SPLITS, DigitsDataset,
                                    _load_digits, _stratified_quotas, digits_split_indices,
                                    upsample_digits)

__all__ = ['INTERPOLATIONS', 'NUM_CLASSES', 'SPLITS', 'DigitsDataset', '_load_digits',
           '_stratified_quotas', 'digits_split_indices', 'upsample_digits']
