"""PCK evaluation of semantic correspondence: pure functions (``pck``), the metric, the
semantic-vs-spatial metric, and evaluation without a Runner for the analysis tools."""
from .disentangled_metric import DisentangledMetric
from .pck import (AVERAGINGS, COMPARES, PRESETS, THRESHOLD_SCALES, THRESHOLDS, aggregate, correct,
                  pair_distances, pck_threshold, per_category, reference_length, resolve_options,
                  to_frame, within)
from .pck_metric import PCKMetric

__all__ = [
    'DisentangledMetric', 'AVERAGINGS', 'COMPARES', 'PRESETS', 'THRESHOLD_SCALES', 'THRESHOLDS', 'PCKMetric',
    'aggregate', 'correct', 'pair_distances', 'pck_threshold', 'per_category',
    'reference_length', 'resolve_options', 'to_frame', 'within'
]
