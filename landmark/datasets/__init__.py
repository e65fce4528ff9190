from .wflw import WFLW_ATTRIBUTES, WFLWAttributeDataset

__all__ = ['WFLW_ATTRIBUTES', 'WFLWAttributeDataset']
