from .ddpm_trainer import DDPMTrainer  # re-export: it lives in common.teachers
from .feature_distiller import FeatureDistiller

__all__ = ['DDPMTrainer', 'FeatureDistiller']
