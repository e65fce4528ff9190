from .classifier_teacher import ClassifierTeacher
from .diffusion_teacher import DiffusionTeacher
from .ddpm_trainer import DDPMTrainer
from .cache_checks import random_augmentations_with_cache, warn_if_cache_never_hits
from .errors import FeatureCacheNeverHitsWarning, TeacherConfigError, TeacherLoadError
from .feature_cache import FeatureCache
from ..feature_hooks import FeatureRecorder, resolve_modules
from .loading import DiffusionComponents, load_diffusion_components

__all__ = [
    'ClassifierTeacher',
    'DiffusionTeacher', 'DDPMTrainer', 'TeacherConfigError', 'TeacherLoadError', 'FeatureCache',
    'FeatureCacheNeverHitsWarning', 'random_augmentations_with_cache', 'warn_if_cache_never_hits',
    'FeatureRecorder', 'resolve_modules', 'DiffusionComponents', 'load_diffusion_components'
]
