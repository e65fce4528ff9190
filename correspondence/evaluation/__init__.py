"""PCK evaluation of semantic correspondence: pure functions (``pck``) and the metric."""
from .pck import (AVERAGINGS, COMPARES, PRESETS, THRESHOLD_SCALES, THRESHOLDS, aggregate, correct,
                  pair_distances, pck_threshold, per_category, reference_length, resolve_options,
                  to_frame, within)
from .pck_metric import PCKMetric

__all__ = [
    'AVERAGINGS', 'COMPARES', 'PRESETS', 'THRESHOLD_SCALES', 'THRESHOLDS', 'PCKMetric',
    'aggregate', 'correct', 'pair_distances', 'pck_threshold', 'per_category',
    'reference_length', 'resolve_options', 'to_frame', 'within'
]
