from .classifier_teacher import ClassifierTeacher
from .diffusion_teacher import DiffusionTeacher
from .errors import TeacherConfigError, TeacherLoadError
from .feature_cache import FeatureCache
from ..feature_hooks import FeatureRecorder, resolve_modules
from .loading import DiffusionComponents, load_diffusion_components

__all__ = [
    'ClassifierTeacher',
    'DiffusionTeacher', 'TeacherConfigError', 'TeacherLoadError', 'FeatureCache',
    'FeatureRecorder', 'resolve_modules', 'DiffusionComponents', 'load_diffusion_components'
]
