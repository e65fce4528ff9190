"""Image-text matching with Stable Diffusion: DSD's cross-attention scores, Diffusion-ITM's
denoising scores, LoRA "attention-based prompt learning", retrieval datasets and metrics, and a web
playground.

The one rule: a score is computed per (image, text) pair from noise that depends only on the seed
and the timestep, so a pair's score never depends on the other candidates it is scored with.
Importing this package registers the scorer, the matcher and its losses in mmengine's root
``MODELS``, the datasets in ``DATASETS`` and ``ITMRetrievalMetric`` in ``METRICS``.
"""
from . import datasets, evaluation, models

__all__ = ['datasets', 'evaluation', 'models']
