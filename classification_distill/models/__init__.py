from .ddpm_trainer import DDPMTrainer
from .feature_distiller import FeatureDistiller

__all__ = ['DDPMTrainer', 'FeatureDistiller']
