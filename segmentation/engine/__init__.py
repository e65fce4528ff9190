from .hooks import SegOverlayVisualizationHook
from .pixel_ensemble_loop import PixelEnsembleTrainLoop

__all__ = ['SegOverlayVisualizationHook', 'PixelEnsembleTrainLoop']
