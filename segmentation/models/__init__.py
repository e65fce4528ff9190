"""Models of the ddpm-segmentation pipeline: the batched pixel-MLP ensemble and its segmentor."""
from .diffusion_pixel_segmentor import DiffusionPixelSegmentor
from .pixel_ensemble import (EarlyStopping, PixelMLPEnsemble, image_uncertainty, predict_labels,
                             train_ensemble)

__all__ = ['DiffusionPixelSegmentor', 'EarlyStopping', 'PixelMLPEnsemble', 'image_uncertainty',
           'predict_labels', 'train_ensemble']
