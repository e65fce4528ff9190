"""Moved: ``FeatureDistiller`` lives in :mod:`common.distill.feature_distiller`.

It is registered in mmengine's root ``MODELS`` (so ``type='FeatureDistiller'`` resolves under
``default_scope='mmpretrain'`` as before) and takes any student. This module only re-exports it
so that ``from classification_distill.models.feature_distiller import FeatureDistiller`` keeps
working; import it from ``common.distill`` in new code.
"""
from common.distill.feature_distiller import FeatureDistiller, _read_label_map  # noqa: F401

__all__ = ['FeatureDistiller']
