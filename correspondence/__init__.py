"""Semantic correspondence from diffusion and ViT features (DIFT, SD-DINO, DINOv2, DistillDIFT).

Importing this package registers its datasets, metrics and matchers in mmengine's root registries
(the subtree has no OpenMMLab framework of its own). Work in progress (issue #8): the readers of
the official releases (SPair-71k, PF-WILLOW, PF-PASCAL, CUB-200-2011), the coordinate frames, the
matchers and the PCK metric with its published presets exist; feature extractors, configs,
training, analysis tools and the demo do not yet.
"""
from . import datasets, evaluation, geometry, matching, models  # noqa: F401
