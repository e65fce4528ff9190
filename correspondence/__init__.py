"""Semantic correspondence from diffusion and ViT features (DIFT, SD-DINO, DINOv2, DistillDIFT).

Importing this package registers its datasets, transforms, extractors, students, losses, models,
matchers and metrics in mmengine's root registries (the subtree has no OpenMMLab framework of its
own): readers of the official releases (SPair-71k, PF-WILLOW, PF-PASCAL, CUB-200-2011, PASCAL-Part
semantic-vs-spatial pairs), coordinate frames, feature extractors (DINOv2, Stable Diffusion,
fusion, Diffusion Hyperfeatures), matchers, the PCK metric with the published presets, and
DistillDIFT-style training (trainable students, similarity-map losses, point sampling,
teacher-feature shards, unlabeled pairing).
"""
from . import datasets, evaluation, geometry, matching, models  # noqa: F401
