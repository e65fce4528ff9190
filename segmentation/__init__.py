"""Segmentation from diffusion teachers with mmseg 1.x: face parsing on CelebAMask-HQ (BiSeNetV1,
initialised from distilled students), label-efficient segmentation from DDPM pixel features
(ddpm-segmentation's pixel-MLP ensemble) and sparse-autoencoder dictionary learning on them.

Importing this package (every config does, after ``common``, through ``custom_imports``)
registers into mmseg's registries: the ``CelebAMaskHQDataset`` and ``DDPMSegDataset``, the
``RandomFlipSwapLR`` and ``LoadNpyAnnotations`` transforms, the ``FaceParsingMetric`` and
``DDPMSegMIoU`` metrics, the ``DiffusionPixelSegmentor`` and the ``SegOverlayVisualizationHook``;
into mmengine's root registries: ``PixelFeatureExtractor`` / ``RawPixelFeatures``,
``PixelMLPEnsemble``, the ``PixelEnsembleTrainLoop`` and the SAEs (``ReluSAE``, ``TopKSAE``).
"""
import common  # noqa: F401  (mmcv-lite fallback and safe checkpoint loading, before mmseg)

from . import datasets, engine, evaluation, models, pixel_features, sae  # noqa: E402,F401
