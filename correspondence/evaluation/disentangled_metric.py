"""Does a correspondence model match by meaning or by position? The disentangled metric.

The one rule: every predicted keypoint is judged twice, against the **semantic** target (the same
part of the target subject, ``trg_kps`` and its part mask) and against the **spatial** one (the
opposite-side part, ``trg_spatial_kps`` and its mask), with the same criterion; the numbers are
the shares of keypoints that are semantic-correct, spatial-correct, both and neither, pooled over
keypoints, overall and per pair kind (``mirrored`` / ``cross``) and class. A semantic share far
above the spatial one means meaning wins; the reverse means the features follow position (or,
on mirrored pairs, appearance that ignores which side a part is on).

Criteria (``criterion``):

* ``'mask'`` (default): the prediction, rounded to its pixel (pixel ``i``'s centre is at ``i``),
  lies inside the part mask; a point outside the image is inside nothing.
* ``'distance'``: within ``alpha * max(w, h)`` of the target box (``<=``, original pixels) of
  the part's keypoint, as PCK. Near parts (two eyes) can make a point both.
* ``'mask_or_distance'``: either of the two.
"""
import json
from collections import OrderedDict

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from mmengine.registry import METRICS
from prettytable import PrettyTable

from ..datasets.disentangled import PAIR_KINDS, rle_decode
from .pck import reference_length

CRITERIA = ('mask', 'distance', 'mask_or_distance')
OUTCOMES = ('semantic', 'spatial', 'both', 'neither')


def _array(value):
    if hasattr(value, 'detach'):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64).reshape(-1, 2)


def inside(points, mask):
    """Boolean ``[K]``: is each ``(x, y)`` point's pixel (rounded half up) in the ``bool`` mask?"""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    h, w = mask.shape
    ok = np.isfinite(points).all(1)
    pix = np.floor(np.nan_to_num(points) + 0.5).astype(np.int64)
    ok &= (pix[:, 0] >= 0) & (pix[:, 0] < w) & (pix[:, 1] >= 0) & (pix[:, 1] < h)
    hit = np.zeros(len(points), dtype=bool)
    hit[ok] = mask[pix[ok, 1], pix[ok, 0]]
    return hit


def summarise(semantic, spatial):
    """Percentages of ``OUTCOMES``, ``ratio`` (semantic / spatial: ``inf`` when no keypoint is
    spatial-correct, ``nan`` when none is either) and ``semantic_share`` (semantic / (semantic +
    spatial), percent), and ``keypoints`` (the count), from two boolean arrays."""
    semantic, spatial = np.asarray(semantic, bool), np.asarray(spatial, bool)
    n = len(semantic)
    if n == 0:
        return OrderedDict(keypoints=0)
    out = OrderedDict(
        semantic=100.0 * semantic.mean(), spatial=100.0 * spatial.mean(),
        both=100.0 * (semantic & spatial).mean(), neither=100.0 * (~semantic & ~spatial).mean())
    s, p = int(semantic.sum()), int(spatial.sum())
    out['ratio'] = float(s / p) if p else (float('inf') if s else float('nan'))
    out['semantic_share'] = 100.0 * s / (s + p) if s + p else float('nan')
    out['keypoints'] = n
    return out


@METRICS.register_module()
class DisentangledMetric(BaseMetric):
    """Semantic vs spatial accuracy of predicted keypoints on ``DisentangledPairsDataset``.

    Args:
        criterion (str): ``'mask'``, ``'distance'`` or ``'mask_or_distance'`` (module docstring).
        alpha (float): the distance criteria's fraction of ``max(w, h)`` of the target box.
        per_category (bool): also report each class (per kind). Defaults to True.
        dump_pairs (str | None): a JSON file written (atomically) with every pair's keypoints,
            prediction and per-keypoint verdicts (``tools/test.py --out FILE.json`` sets it).

    Metrics (percent unless said): ``'{group}/{outcome}'`` for ``group`` in ``all``,
    ``mirrored``, ``cross`` (those present) and ``outcome`` in ``semantic``, ``spatial``,
    ``both``, ``neither``, ``ratio`` (semantic / spatial, a plain ratio), ``semantic_share``,
    ``keypoints`` (a count); with ``per_category`` also ``'{group}/{class}/{outcome}'``.
    Each data sample needs ``pred_kps`` [K, 2] (original target pixels), ``trg_kps``,
    ``trg_spatial_kps``, ``kps_names``, ``trg_spatial_names``, ``trg_part_masks``,
    ``trg_bbox``, ``category`` and ``kind``, as the dataset and ``CorrespondenceModel`` give.
    """

    default_prefix = 'disentangled'

    def __init__(self, criterion='mask', alpha=0.1, per_category=True, dump_pairs=None,
                 collect_device='cpu', prefix=None, **kwargs):
        super().__init__(collect_device=collect_device, prefix=prefix)
        if criterion not in CRITERIA:
            raise ValueError(f'DisentangledMetric: criterion={criterion!r} is not one of '
                             f'{CRITERIA}; use "mask" (inside the part), "distance" (within '
                             'alpha * max(w, h) of the target box) or "mask_or_distance".')
        if not 0 < float(alpha):
            raise ValueError(f'DisentangledMetric: alpha={alpha!r} must be a positive fraction '
                             'of the target box, e.g. 0.1.')
        self.criterion = criterion
        self.alpha = float(alpha)
        self.per_category = per_category
        self.dump_pairs = dump_pairs

    def judge(self, pred, kps, names, masks, length):
        """Boolean ``[K]``: is each prediction correct for the targets ``kps`` / parts ``names``?"""
        ok = np.zeros(len(pred), dtype=bool)
        if self.criterion in ('mask', 'mask_or_distance'):
            for k, name in enumerate(names):
                ok[k] |= bool(inside(pred[k:k + 1], masks[name])[0])
        if self.criterion in ('distance', 'mask_or_distance'):
            ok |= np.linalg.norm(pred - kps, axis=-1) <= self.alpha * length
        return ok

    def process(self, data_batch, data_samples):
        for sample in data_samples:
            if not isinstance(sample, dict):
                sample = sample.to_dict()
            pair_id = sample.get('pair_id', '?')
            missing = [k for k in ('pred_kps', 'trg_kps', 'trg_spatial_kps', 'kps_names',
                                   'trg_spatial_names', 'trg_part_masks', 'kind')
                       if sample.get(k) is None]
            if missing:
                raise ValueError(f'DisentangledMetric: the data sample of pair {pair_id!r} has no '
                                 f'{missing}; evaluate DisentangledPairsDataset pairs (it gives '
                                 'the spatial targets and part masks) with a model that returns '
                                 'pred_kps.')
            pred = _array(sample['pred_kps'])
            semantic_kps, spatial_kps = _array(sample['trg_kps']), _array(sample['trg_spatial_kps'])
            if pred.shape != semantic_kps.shape:
                raise ValueError(f'DisentangledMetric: pair {pair_id!r} has pred_kps of shape '
                                 f'{pred.shape} but {len(semantic_kps)} target keypoints; the '
                                 'model must predict one point per source keypoint.')
            names = list(sample['kps_names'])
            spatial_names = list(sample['trg_spatial_names'])
            masks = {}
            if self.criterion != 'distance':
                masks = {n: rle_decode(sample['trg_part_masks'][n])
                         for n in set(names + spatial_names)}
            length = (reference_length(sample, 'target_bbox')
                      if self.criterion != 'mask' else 0.0)
            self.results.append(dict(
                pair_id=pair_id, category=str(sample.get('category')), kind=sample['kind'],
                kps_names=names, trg_spatial_names=spatial_names,
                pred_kps=pred.tolist(), trg_kps=semantic_kps.tolist(),
                trg_spatial_kps=spatial_kps.tolist(), threshold=self.alpha * length,
                semantic=self.judge(pred, semantic_kps, names, masks, length).tolist(),
                spatial=self.judge(pred, spatial_kps, spatial_names, masks, length).tolist()))

    def compute_metrics(self, results):
        groups = OrderedDict(all=results)
        for kind in PAIR_KINDS:
            chosen = [r for r in results if r['kind'] == kind]
            if chosen:
                groups[kind] = chosen
        metrics, rows = OrderedDict(), []
        for group, records in groups.items():
            keys = [(group, records)]
            if self.per_category:
                classes = list(OrderedDict.fromkeys(r['category'] for r in records))
                keys += [(f'{group}/{c}', [r for r in records if r['category'] == c])
                         for c in classes]
            for key, chosen in keys:
                summary = summarise(
                    [v for r in chosen for v in r['semantic']],
                    [v for r in chosen for v in r['spatial']])
                for outcome, value in summary.items():
                    metrics[f'{key}/{outcome}'] = value
                rows.append((key, len(chosen), summary))
        print_log('\n' + self.format_table(rows), logger='current')
        if self.dump_pairs:
            self.write_pairs(self.dump_pairs, results)
        return metrics

    def format_table(self, rows):
        table = PrettyTable()
        table.field_names = ['group', 'pairs', 'keypoints', 'semantic %', 'spatial %', 'both %',
                             'neither %', 'semantic / spatial']
        for key, pairs, s in rows:
            if not s['keypoints']:
                continue
            table.add_row([key, pairs, s['keypoints']] + [f'{s[o]:.2f}' for o in OUTCOMES]
                          + [f'{s["ratio"]:.3f}'])
        table.align['group'] = 'l'
        return (f'Semantic vs spatial correspondence (criterion {self.criterion}'
                f'{"" if self.criterion == "mask" else f", alpha {self.alpha:g}"}):\n'
                + table.get_string())

    def write_pairs(self, path, results=None):
        """Write ``{'criterion', 'alpha', 'pairs': [records]}`` to ``path`` (JSON, atomically);
        each record has the keypoints, ``pred_kps``, the distance ``threshold`` and the
        per-keypoint ``semantic`` / ``spatial`` verdicts every number is pooled from."""
        from common.io import atomic_write_bytes
        payload = dict(criterion=self.criterion, alpha=self.alpha,
                       pairs=self.results if results is None else results)
        atomic_write_bytes(path, json.dumps(payload, indent=1).encode('utf-8'))
        print_log(f'DisentangledMetric: wrote {len(payload["pairs"])} pairs to {path}',
                  logger='current')
