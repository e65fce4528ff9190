"""Helpers of the offline digits demo of DMD (``make demo-dmd``, ``tools/demo_dmd.py``).

The one rule: nothing here is needed to distil or evaluate a real teacher; these pieces exist so
that the demo can judge digits without downloads (a small classifier trained by the demo, its
penultimate features as a labelled proxy for Inception features, the "recognised" rule).
"""
from .digits_classifier import (RECOGNISED_THRESHOLD, DigitsClassifierError, DigitsCNN,
                                load_digits_classifier, recognised, save_digits_classifier,
                                train_digits_classifier)

__all__ = ['DigitsCNN', 'DigitsClassifierError', 'RECOGNISED_THRESHOLD', 'recognised',
           'train_digits_classifier', 'save_digits_classifier', 'load_digits_classifier']
