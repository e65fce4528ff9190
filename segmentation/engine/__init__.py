from .hooks import SegOverlayVisualizationHook

__all__ = ['SegOverlayVisualizationHook']
