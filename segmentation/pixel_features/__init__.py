"""ddpm-segmentation's pixel features of a pixel-space DDPM, kept at native resolution.

The one rule: upsampled features are computed only for the pixels asked for (``sample_pixels``,
``upsampled_chunks``); the ``[N, D, S, S]`` tensor of the reference is never built. Importing
this package registers ``PixelFeatureExtractor`` and the raw-pixel baseline ``RawPixelFeatures``
in mmengine's root ``MODELS``.
"""
from .adm_blocks import (DEFAULT_BLOCKS, DEFAULT_STEPS, PAPER_BLOCKS, PAPER_STEPS, AdmBlockError,
                         adm_feature_dim, adm_output_block_path, adm_output_block_shape,
                         num_output_blocks)
from .extractor import (PixelFeatureError, PixelFeatureExtractor, RawPixelFeatures,
                        sample_pixels, upsampled_chunks)
from .store import NativeFeatureStore, PixelSampler, memory_report

__all__ = [
    'DEFAULT_BLOCKS', 'DEFAULT_STEPS', 'PAPER_BLOCKS', 'PAPER_STEPS', 'AdmBlockError',
    'adm_feature_dim', 'adm_output_block_path', 'adm_output_block_shape', 'num_output_blocks',
    'PixelFeatureError', 'PixelFeatureExtractor', 'RawPixelFeatures', 'sample_pixels', 'upsampled_chunks',
    'NativeFeatureStore', 'PixelSampler', 'memory_report'
]
