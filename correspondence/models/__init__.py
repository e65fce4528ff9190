"""Models of the correspondence subtree: feature extractors and the correspondence model."""
from .correspondence_model import CorrespondenceModel, PairDataPreprocessor
from .extractors import (DiffusionExtractor, DINOv2Extractor, FusedExtractor, PixelExtractor,
                         RandomInitExtractor)

__all__ = [
    'CorrespondenceModel', 'PairDataPreprocessor',
    'DINOv2Extractor', 'DiffusionExtractor', 'FusedExtractor', 'PixelExtractor',
    'RandomInitExtractor'
]
