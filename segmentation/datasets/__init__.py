"""Datasets of the segmentation subtree: CelebAMask-HQ face parsing, the ddpm-segmentation
release (six few-label datasets, ``.npy`` masks) and the digits few-label task of the demo."""
from .celebamask_hq import (BACKGROUND_INDEX, CLASSES, LEFT_RIGHT_PAIRS, PAINT_ORDER, PALETTE,
                            PARTS, CelebAMaskHQDataset, class_index)
from .ddpm_seg import (DDPM_SEG_DATASETS, DDPMSegDataError, DDPMSegDataset, DDPMSegInfo,
                       LoadNpyAnnotations, drop_small_classes, load_ddpm_seg_split)
from .digits_seg import DIGITS_SEG_NAME, write_digits_seg_release
from .transforms import RandomFlipSwapLR

__all__ = [
    'BACKGROUND_INDEX', 'CLASSES', 'LEFT_RIGHT_PAIRS', 'PAINT_ORDER', 'PALETTE', 'PARTS',
    'CelebAMaskHQDataset', 'class_index', 'RandomFlipSwapLR', 'DDPM_SEG_DATASETS',
    'DDPMSegDataError', 'DDPMSegDataset', 'DDPMSegInfo', 'LoadNpyAnnotations',
    'drop_small_classes', 'load_ddpm_seg_split', 'DIGITS_SEG_NAME', 'write_digits_seg_release',
]
