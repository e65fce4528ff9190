from .wflw_nme_metric import WFLWNMEMetric

__all__ = ['WFLWNMEMetric']
