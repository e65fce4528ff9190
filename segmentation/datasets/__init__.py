from .celebamask_hq import (BACKGROUND_INDEX, CLASSES, LEFT_RIGHT_PAIRS, PAINT_ORDER, PALETTE,
                            PARTS, CelebAMaskHQDataset, class_index)
from .transforms import RandomFlipSwapLR

__all__ = [
    'BACKGROUND_INDEX', 'CLASSES', 'LEFT_RIGHT_PAIRS', 'PAINT_ORDER', 'PALETTE', 'PARTS',
    'CelebAMaskHQDataset', 'class_index', 'RandomFlipSwapLR'
]
