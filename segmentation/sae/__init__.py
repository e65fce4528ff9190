"""Sparse autoencoders (SAEs) on diffusion feature tokens: models, training, metrics.

The one rule: an SAE consumes tokens ``[N, d_in]`` (one token per spatial position of a feature
map) and carries its activation scale and firing counters in its ``state_dict()``. Importing this
package registers ``ReluSAE`` and ``TopKSAE`` in mmengine's root ``MODELS`` registry.
"""
from .metrics import (SAEStats, evaluate_sae, feature_density_histogram,
                      plot_feature_density, reconstruction_metrics, sparsity_metrics)
from .models import ReluSAE, SAEConfigError, TopKSAE, geometric_median
from .train import SAECheckpointError, load_sae, save_sae, train_sae

__all__ = ['ReluSAE', 'TopKSAE', 'SAEConfigError', 'geometric_median', 'SAEStats', 'evaluate_sae',
           'feature_density_histogram', 'plot_feature_density', 'reconstruction_metrics',
           'sparsity_metrics', 'SAECheckpointError', 'load_sae', 'save_sae', 'train_sae']
