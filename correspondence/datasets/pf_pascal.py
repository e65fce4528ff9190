"""PF-PASCAL pairs read from ``<split>_pairs_pf_pascal.csv`` and ``PF-dataset-PASCAL/``.

The one rule: the keypoint cells are ``';'``-separated numbers; a point counts only when it is
present (finite, non-negative: copies pad with ``-1``) in both images. No bounding boxes: the
SD-DINO/GeoAware protocol measures PCK against the image size (a metric option).
"""
import numpy as np
from mmengine.registry import DATASETS

from ._csv import SizeCache, csv_pair, read_csv
from .base import PairDataset, data_error, progress, require_path

PF_PASCAL_CLASSES = ('aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat',
                     'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person',
                     'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor')
PF_PASCAL_COLUMNS = ('source_image', 'target_image', 'class', 'XA', 'YA', 'XB', 'YB')
_FIX = ('Download PF-dataset-PASCAL.zip from https://www.di.ens.fr/willow/research/proposalflow/ '
        'and the pair lists (test_pairs_pf_pascal.csv, val_pairs_pf_pascal.csv) from '
        'https://www.di.ens.fr/willow/research/cnngeometric/other_resources/, extract the zip '
        'next to the CSVs and set data_root to that folder.')


def _numbers(cell, csv_path, line, column):
    try:
        return [float(v) for v in cell.replace(',', ';').split(';') if v.strip()]
    except ValueError as exc:
        raise data_error(csv_path, f"';'-separated numbers in column {column!r}, line {line} "
                         f'({exc})', _FIX) from exc


@DATASETS.register_module()
class PFPascalDataset(PairDataset):
    """PF-PASCAL (20 PASCAL VOC classes; the test split has 299 pairs).

    Args:
        data_root: the folder holding the CSVs; image paths in them (``PF-dataset-PASCAL/
            JPEGImages/<name>.jpg``) are relative to it (the first folder may be renamed or
            dropped, as for :class:`PFWillowDataset`).
        split: ``'test'``, ``'val'`` or ``'trn'``: reads ``<split>_pairs_pf_pascal.csv``.
        ann_file: another pair file instead (same columns), relative to ``data_root``.

    Columns (by header name; extra columns are ignored): ``source_image``, ``target_image``,
    ``class`` (1-based in the order of :data:`PF_PASCAL_CLASSES`), ``XA``, ``YA``, ``XB``,
    ``YB``. Coordinates are kept as stored. ``pair_id`` is ``'<row>:<class>'``.
    """

    METAINFO = dict(classes=PF_PASCAL_CLASSES)

    def __init__(self, data_root, split='test', ann_file=None, **kwargs):
        if ann_file is None and split not in ('trn', 'val', 'test'):
            raise ValueError(f"split={split!r}: PF-PASCAL splits are 'trn', 'val', 'test'.")
        self.split = split
        super().__init__(data_root, ann_file=ann_file or f'{split}_pairs_pf_pascal.csv',
                         **kwargs)

    def load_data_list(self):
        csv_path = require_path(self._root_path(self.ann_file),
                                'the PF-PASCAL pair list (source_image, target_image, class, XA, '
                                'YA, XB, YB)', _FIX)
        header, rows = read_csv(csv_path, _FIX, required=PF_PASCAL_COLUMNS)
        col = {name: header.index(name) for name in PF_PASCAL_COLUMNS}
        sizes = SizeCache()
        data_list = []
        for index, row in enumerate(progress(rows, f'PF-PASCAL {self.split}')):
            line = index + 2
            try:
                label = int(float(row[col['class']]))
                category = PF_PASCAL_CLASSES[label - 1]
                if label < 1:
                    raise IndexError
            except (ValueError, IndexError) as exc:
                raise data_error(csv_path, f"a class number 1..20 in column 'class', line {line}, "
                                 f'got {row[col["class"]]!r}', _FIX) from exc
            xa, ya, xb, yb = (_numbers(row[col[c]], csv_path, line, c)
                              for c in ('XA', 'YA', 'XB', 'YB'))
            if not len(xa) == len(ya) == len(xb) == len(yb):
                raise data_error(csv_path, f'as many XA, YA, XB and YB numbers, line {line} has '
                                 f'{len(xa)}, {len(ya)}, {len(xb)}, {len(yb)}', _FIX)
            src_kps = np.stack([xa, ya], axis=1).reshape(-1, 2)
            trg_kps = np.stack([xb, yb], axis=1).reshape(-1, 2)
            data_list.append(csv_pair(
                self.data_root, csv_path, _FIX, sizes, index, category,
                row[col['source_image']], row[col['target_image']], src_kps, trg_kps))
        return data_list
