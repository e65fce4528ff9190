"""Face-parsing scores from a confusion matrix: mIoU and mean F1 over the parts, background apart.

Face-parsing papers report the mean over the face *parts*; background, which covers about half of
every CelebAMask-HQ image, would dominate an unweighted pixel score and is listed on its own.
"""
from collections import OrderedDict

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from mmseg.registry import METRICS
from prettytable import PrettyTable


def confusion_matrix(pred, gt, num_classes, ignore_index=255):
    """Pixel counts ``C[g, p]``: how many pixels of ground-truth class ``g`` were predicted ``p``.

    ``pred`` and ``gt`` are integer arrays (numpy or torch) of the same shape; pixels whose ground
    truth is ``ignore_index`` are not counted. Returns an ``int64`` numpy array
    ``(num_classes, num_classes)``.
    """
    if tuple(pred.shape) != tuple(gt.shape):
        raise ValueError(f'prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} '
                         'differ in shape')
    if isinstance(pred, np.ndarray):
        pred = torch.from_numpy(pred)
    if isinstance(gt, np.ndarray):
        gt = torch.from_numpy(gt)
    pred = pred.reshape(-1).long()
    gt = gt.reshape(-1).to(pred.device).long()
    keep = gt != ignore_index
    pred, gt = pred[keep], gt[keep]
    for name, values in (('ground truth', gt), ('prediction', pred)):
        bad = values[(values < 0) | (values >= num_classes)]
        if bad.numel():
            raise ValueError(
                f'{name} holds label {int(bad[0])} outside 0..{num_classes - 1} (ignore_index '
                f'{ignore_index}); the label maps do not match the {num_classes} classes of the '
                'dataset')
    counts = torch.bincount(gt * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).cpu().numpy().astype(np.int64)


def _ratio(num, den):
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def face_parsing_scores(confusion, background_index=0):
    """Per-class and mean scores of a confusion matrix (rows ground truth, columns prediction).

    For class ``c`` with ``TP = C[c, c]``, ``FP = sum(C[:, c]) - TP``, ``FN = sum(C[c, :]) - TP``:
    ``IoU = TP / (TP + FP + FN)``, ``F1 = 2 TP / (2 TP + FP + FN)``, ``Precision = TP / (TP + FP)``,
    ``Recall = TP / (TP + FN)``. A ratio whose denominator is 0 (a class absent from both the
    ground truth and the predictions) is NaN and left out of the means.

    Returns a dict of fractions in [0, 1]: ``per_class`` (``IoU``, ``F1``, ``Precision``,
    ``Recall``: arrays over all classes), ``mIoU`` and ``mF1`` (means over every class but
    ``background_index``), ``background_IoU``, ``background_F1`` and ``aAcc`` (pixel accuracy over
    all classes). ``background_index=None`` averages over all classes.
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f'confusion matrix must be square, got shape {confusion.shape}')
    tp = np.diag(confusion)
    fp = confusion.sum(axis=0) - tp
    fn = confusion.sum(axis=1) - tp
    per_class = OrderedDict(
        IoU=_ratio(tp, tp + fp + fn),
        F1=_ratio(2 * tp, 2 * tp + fp + fn),
        Precision=_ratio(tp, tp + fp),
        Recall=_ratio(tp, tp + fn))
    parts = np.ones(len(tp), dtype=bool)
    if background_index is not None:
        parts[background_index] = False

    def mean(values):
        values = values[parts]
        return float(np.nanmean(values)) if np.isfinite(values).any() else float('nan')

    scores = OrderedDict(
        per_class=per_class,
        mIoU=mean(per_class['IoU']),
        mF1=mean(per_class['F1']),
        aAcc=float(_ratio(tp.sum(), confusion.sum())))
    if background_index is not None:
        scores['background_IoU'] = float(per_class['IoU'][background_index])
        scores['background_F1'] = float(per_class['F1'][background_index])
    return scores


def _percent(value):
    return float(np.round(value * 100, 2)) if np.isfinite(value) else float('nan')


@METRICS.register_module()
class FaceParsingMetric(BaseMetric):
    """mIoU and mean F1 over the face parts, background reported on its own (in percent).

    Metrics: ``mIoU``, ``mF1`` (means over the 18 parts, classes absent from both prediction and
    ground truth left out), ``background_IoU``, ``background_F1``, ``aAcc`` (pixel accuracy over
    all 19 classes). The per-class IoU/F1/precision/recall table is written to the log.

    Args:
        ignore_index (int): ground-truth value that is not scored. Defaults to 255.
        background_index (int | None): the class kept out of the means. Defaults to 0.
    """

    def __init__(self, ignore_index=255, background_index=0, collect_device='cpu', prefix=None,
                 **kwargs):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.ignore_index = ignore_index
        self.background_index = background_index

    def process(self, data_batch, data_samples):
        num_classes = len(self.dataset_meta['classes'])
        for sample in data_samples:
            pred = sample['pred_sem_seg']['data'].squeeze()
            gt = sample['gt_sem_seg']['data'].squeeze()
            self.results.append(
                confusion_matrix(pred, gt, num_classes, ignore_index=self.ignore_index))

    def compute_metrics(self, results):
        confusion = np.sum(results, axis=0)
        scores = face_parsing_scores(confusion, background_index=self.background_index)
        print_log('\n' + self.format_tables(scores, self.dataset_meta['classes']),
                  logger='current')
        metrics = OrderedDict(mIoU=_percent(scores['mIoU']), mF1=_percent(scores['mF1']))
        if self.background_index is not None:
            metrics['background_IoU'] = _percent(scores['background_IoU'])
            metrics['background_F1'] = _percent(scores['background_F1'])
        metrics['aAcc'] = _percent(scores['aAcc'])
        return metrics

    def format_tables(self, scores, classes):
        """The per-class table and the summary table as one printable string."""
        per_class = PrettyTable()
        per_class.field_names = ['Class'] + [f'{name} (%)' for name in scores['per_class']]
        for idx, name in enumerate(classes):
            label = f'{name} (not in means)' if idx == self.background_index else name
            per_class.add_row([label] + [_percent(values[idx])
                                         for values in scores['per_class'].values()])
        per_class.align['Class'] = 'l'
        summary = PrettyTable()
        keys = [k for k in ('mIoU', 'mF1', 'background_IoU', 'background_F1', 'aAcc')
                if k in scores]
        summary.field_names = [f'{k} (%)' for k in keys]
        summary.add_row([_percent(scores[k]) for k in keys])
        return (f'per-class results:\n{per_class.get_string()}\n'
                f'summary (means over the parts):\n{summary.get_string()}')
