"""Moved to :mod:`common.teachers.ddpm_trainer` (two subtrees use the digits teacher); this
re-export keeps ``classification_distill.models.ddpm_trainer`` imports and configs working."""
from common.teachers.ddpm_trainer import DDPMTrainer  # noqa: F401

__all__ = ['DDPMTrainer']
