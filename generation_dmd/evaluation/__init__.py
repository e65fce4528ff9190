"""Evaluation of generators: FID / Inception Score by the standard protocol, and labelled proxies.

Importing this package registers ``GenerationMetric`` in mmengine's root ``METRICS`` and the
feature extractors (``InceptionFeatureExtractor``, ``ClassifierFeatureExtractor``) in its root
``MODELS``. torch-fidelity is imported only when the Inception extractor is built. See
``docs/fid.md`` for the protocol and where to get the Inception weights and reference statistics.
"""
from .feature_extractors import (ClassifierFeatureExtractor, FeatureExtractorError,
                                 GenerationFeatureExtractor, InceptionFeatureExtractor)
from .frechet import (FeatureStatistics, FrechetError, InceptionScoreAccumulator,
                      frechet_distance, inception_score, load_reference_stats,
                      save_reference_stats)
from .metric import GenerationMetric, GenerationMetricError, build_feature_extractor
from .sources import ImageSourceError, PickleRefusedError, iter_image_batches, reference_statistics

__all__ = [
    'ClassifierFeatureExtractor', 'FeatureExtractorError', 'GenerationFeatureExtractor',
    'InceptionFeatureExtractor', 'FeatureStatistics', 'FrechetError', 'InceptionScoreAccumulator',
    'frechet_distance', 'inception_score', 'load_reference_stats', 'save_reference_stats',
    'GenerationMetric', 'GenerationMetricError', 'build_feature_extractor', 'ImageSourceError',
    'PickleRefusedError', 'iter_image_batches', 'reference_statistics'
]
