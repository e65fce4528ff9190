from .ddpm_seg_metric import DDPMSegMIoU, compute_iou
from .face_parsing_metric import FaceParsingMetric, confusion_matrix, face_parsing_scores

__all__ = ['FaceParsingMetric', 'confusion_matrix', 'face_parsing_scores', 'DDPMSegMIoU',
           'compute_iou']
