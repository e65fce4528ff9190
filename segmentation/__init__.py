"""Face parsing on CelebAMask-HQ with mmseg 1.x (BiSeNetV1), initialised from distilled students.

Importing this package (every config does, after ``common``, through ``custom_imports``)
registers into mmseg's registries: the ``CelebAMaskHQDataset``, the ``RandomFlipSwapLR``
transform, the ``FaceParsingMetric`` and the ``SegOverlayVisualizationHook``.
"""
import common  # noqa: F401  (mmcv-lite fallback and safe checkpoint loading, before mmseg)

from . import datasets, engine, evaluation  # noqa: E402,F401
