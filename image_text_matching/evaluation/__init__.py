"""Evaluation of image-text matching: the retrieval metric (accuracy, R@k, Winoground scores).

The one rule: ties with the target count as failures (see :mod:`.retrieval_metric`). Importing
this package registers ``ITMRetrievalMetric`` in mmengine's root ``METRICS``.
"""
from .retrieval_metric import (ITMRetrievalMetric, metrics_from_dump, retrieval_metrics,
                               target_rank, winoground_outcome)

__all__ = ['ITMRetrievalMetric', 'metrics_from_dump', 'retrieval_metrics', 'target_rank',
           'winoground_outcome']
