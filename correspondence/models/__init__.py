"""Models of the correspondence subtree: feature extractors, the correspondence model, the
trainable students and their distiller, similarity-map losses and point samplers."""
from .correspondence_model import CorrespondenceModel, PairDataPreprocessor
from .distiller import CorrespondenceDistiller
from .extractors import (BackboneStudent, DiffusionExtractor, DINOv2Extractor, FusedExtractor,
                         PixelExtractor, RandomInitExtractor)
from .hyperfeatures import HyperfeatureAggregation, HyperfeatureExtractor
from .losses import KeypointCELoss, SimilarityDistillLoss, SoftArgmaxMSELoss, cosine_similarity
from .point_sampling import PointSampler, co_pca_foreground
from .students import DiffusionStudent, DINOv2Student, UpscalerHead

__all__ = [
    'CorrespondenceModel', 'PairDataPreprocessor', 'CorrespondenceDistiller',
    'DINOv2Extractor', 'DiffusionExtractor', 'FusedExtractor', 'PixelExtractor',
    'RandomInitExtractor', 'BackboneStudent',
    'KeypointCELoss', 'SimilarityDistillLoss', 'SoftArgmaxMSELoss', 'cosine_similarity',
    'PointSampler', 'co_pca_foreground', 'DINOv2Student', 'DiffusionStudent', 'UpscalerHead',
    'HyperfeatureAggregation', 'HyperfeatureExtractor',
]
