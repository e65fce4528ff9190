from .nme import WFLW_NORM_INDICES, interocular_distance, nme_per_sample

__all__ = ['WFLW_NORM_INDICES', 'interocular_distance', 'nme_per_sample']
