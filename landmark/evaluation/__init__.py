from .functional import interocular_distance, nme_per_sample
from .metrics import WFLWNMEMetric

__all__ = ['interocular_distance', 'nme_per_sample', 'WFLWNMEMetric']
