"""WFLW 98-point facial landmarks with mmpose 1.x, initialised from distilled students.

Importing ``landmark`` (configs list it after ``common`` in ``custom_imports``) registers the
attribute-keeping WFLW dataset and the NME metric with full-set and per-attribute-subset results
in mmpose's registries.
"""
import common  # noqa: F401  (mmcv op fallback and safe checkpoint loading come first)

from .datasets import WFLW_ATTRIBUTES, WFLWAttributeDataset  # noqa: E402
from .evaluation import WFLWNMEMetric, interocular_distance, nme_per_sample  # noqa: E402

__all__ = [
    'WFLW_ATTRIBUTES', 'WFLWAttributeDataset', 'WFLWNMEMetric', 'interocular_distance',
    'nme_per_sample'
]
