"""Dataset-level mIoU of ddpm-segmentation, exactly as its ``compute_iou``, and the mmseg metric.

The one rule: intersections and unions are SUMMED over all test images before dividing, the class
``ignore_label`` is skipped (its pixels are not removed: a prediction of class c on an ignored
pixel still counts in c's union, as in the reference), ``IoU_c = I_c / (1e-8 + U_c)``, and a class
absent from every ground truth and every prediction scores 0 in the reference's mIoU
(``absent='zero'``); ``absent='skip'`` leaves such classes out of the mean (the usual mmseg-style
number), and the metric reports both under their own names.
"""
from collections import OrderedDict

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from mmseg.registry import METRICS
from prettytable import PrettyTable

ABSENT_MODES = ('zero', 'skip')
EPS = 1e-8


class IoUInputError(ValueError):
    """Bad input to :func:`compute_iou`."""


def _as_numpy(a):
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def iou_counts(pred, gt, num_classes):
    """Per-class pixel counts of one image: ``(intersection, predicted, ground_truth)``, each an
    int64 array ``[num_classes]``; labels outside ``0..num_classes-1`` count for no class."""
    pred, gt = _as_numpy(pred), _as_numpy(gt)
    if pred.shape != gt.shape:
        raise IoUInputError(
            f'compute_iou: a prediction of shape {pred.shape} and a ground truth of shape '
            f'{gt.shape}; expected the same shape. Resize the prediction to the mask (nearest) '
            'before scoring.')
    pred = pred.reshape(-1).astype(np.int64)
    gt = gt.reshape(-1).astype(np.int64)

    def count(values):
        inside = values[(values >= 0) & (values < num_classes)]
        return np.bincount(inside, minlength=num_classes)[:num_classes].astype(np.int64)

    return count(pred[pred == gt]), count(pred), count(gt)


def iou_from_counts(intersection, predicted, ground_truth, ignore_label, absent='zero'):
    """The reference's per-class IoU and mIoU from summed counts (see :func:`compute_iou`)."""
    if absent not in ABSENT_MODES:
        raise IoUInputError(
            f"compute_iou: absent={absent!r}; expected 'zero' (the reference: a class absent "
            "from every ground truth and prediction scores 0) or 'skip' (left out of the mean).")
    intersection = np.asarray(intersection, dtype=np.float64)
    union = np.asarray(predicted, dtype=np.float64) + np.asarray(ground_truth) - intersection
    class_ids = [c for c in range(len(intersection)) if c != ignore_label]
    iou = intersection[class_ids] / (EPS + union[class_ids])
    present = union[class_ids] > 0
    if absent == 'zero':
        miou = float(iou.mean()) if len(iou) else float('nan')
    else:
        miou = float(iou[present].mean()) if present.any() else float('nan')
    return dict(mIoU=miou, IoU=iou, class_ids=class_ids,
                absent=[c for c, p in zip(class_ids, present) if not p])


def compute_iou(preds, gts, num_classes, ignore_label, absent='zero'):
    """Dataset-level mIoU of ddpm-segmentation over paired label maps.

    Args:
        preds, gts: sequences of integer label maps (numpy or torch), pairwise of one shape.
        num_classes (int): the reference's ``number_class`` (the ignore class included when it
            is one of ``0..num_classes-1``, as bedroom_28's background 0).
        ignore_label (int): the class skipped (0 for bedroom_28, 255 for the others).
        absent ('zero' | 'skip'): how classes absent from every ground truth and prediction count.

    Returns a dict: ``mIoU`` (a fraction), ``IoU`` (per evaluated class), ``class_ids`` (the
    evaluated classes, ``ignore_label`` left out) and ``absent`` (classes with an empty union).
    """
    if len(preds) != len(gts):
        raise IoUInputError(f'compute_iou: {len(preds)} predictions but {len(gts)} ground '
                            'truths; expected one prediction per ground-truth mask.')
    totals = np.zeros((3, num_classes), dtype=np.int64)
    for pred, gt in zip(preds, gts):
        totals += np.stack(iou_counts(pred, gt, num_classes))
    return iou_from_counts(*totals, ignore_label=ignore_label, absent=absent)


def _percent(value):
    return float(np.round(value * 100, 2)) if np.isfinite(value) else float('nan')


@METRICS.register_module()
class DDPMSegMIoU(BaseMetric):
    """ddpm-segmentation's dataset-level mIoU (in percent), both ways of counting absent classes.

    Metrics: ``mIoU`` (the reference's number: classes absent from the whole test set score 0)
    and ``mIoU_skip_absent`` (such classes left out); the per-class table is logged. Reads
    ``pred_sem_seg`` and ``gt_sem_seg`` of each data sample.

    Args:
        ignore_label (int): the class skipped (0 for bedroom_28, 255 for the other datasets,
            ``DDPM_SEG_DATASETS[name].ignore_label``); required, as it changes the number.
    """

    def __init__(self, ignore_label, collect_device='cpu', prefix=None, **kwargs):
        super().__init__(collect_device=collect_device, prefix=prefix)
        if isinstance(ignore_label, bool) or not isinstance(ignore_label, int):
            raise IoUInputError(
                f'DDPMSegMIoU: ignore_label={ignore_label!r}; expected the dataset\'s ignore '
                'label as an int (0 for bedroom_28, 255 for the others). Set it in '
                'test_evaluator.')
        self.ignore_label = ignore_label

    def process(self, data_batch, data_samples):
        num_classes = len(self.dataset_meta['classes'])
        for sample in data_samples:
            pred = sample['pred_sem_seg']['data'].squeeze()
            gt = sample['gt_sem_seg']['data'].squeeze()
            self.results.append(np.stack(iou_counts(pred, gt, num_classes)))

    def compute_metrics(self, results):
        totals = np.sum(results, axis=0)
        ignore = self.ignore_label
        zero = iou_from_counts(*totals, ignore_label=ignore, absent='zero')
        skip = iou_from_counts(*totals, ignore_label=ignore, absent='skip')
        classes = self.dataset_meta['classes']
        table = PrettyTable()
        table.field_names = ['Class', 'IoU (%)']
        for c, iou in zip(zero['class_ids'], zero['IoU']):
            name = classes[c] if c < len(classes) else str(c)
            table.add_row([name + (' (absent)' if c in zero['absent'] else ''), _percent(iou)])
        table.align['Class'] = 'l'
        print_log(f'per-class IoU (dataset level, ignore_label {ignore} skipped):\n'
                  f'{table.get_string()}\nmIoU {_percent(zero["mIoU"])} (absent classes count 0, '
                  f'the reference), mIoU_skip_absent {_percent(skip["mIoU"])} '
                  f'({len(skip["absent"])} absent class(es) left out)', logger='current')
        return OrderedDict(mIoU=_percent(zero['mIoU']),
                           mIoU_skip_absent=_percent(skip['mIoU']))
