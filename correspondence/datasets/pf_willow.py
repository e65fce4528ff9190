"""PF-WILLOW test pairs read from ``test_pairs_pf.csv`` and ``PF-dataset/`` as downloaded.

The one rule: PF-WILLOW has no bounding boxes (``src_bbox = trg_bbox = None``); the PCK metric
takes the keypoints' box. Image sizes come from the image headers (no pixels are decoded).
"""
import os.path as osp

import numpy as np
from mmengine.registry import DATASETS

from ._csv import SizeCache, csv_pair, parse_floats, read_csv
from .base import PairDataset, progress, require_path

PF_WILLOW_CATEGORIES = ('car(G)', 'car(M)', 'car(S)', 'duck(S)', 'motorbike(G)', 'motorbike(M)',
                        'motorbike(S)', 'winebottle(M)', 'winebottle(wC)', 'winebottle(woC)')
PF_WILLOW_CLASSES = ('car', 'duck', 'motorbike', 'winebottle')
NUM_KPS = 10
_FIX = ('Download PF-dataset.zip from https://www.di.ens.fr/willow/research/proposalflow/ and '
        'test_pairs_pf.csv from https://www.di.ens.fr/willow/research/cnngeometric/'
        'other_resources/, extract the zip next to the CSV and set data_root to that folder.')


@DATASETS.register_module()
class PFWillowDataset(PairDataset):
    """PF-WILLOW (900 test pairs, 10 keypoints each).

    Args:
        data_root: the folder holding ``csv`` and the images. The CSV names images
            ``PF-dataset/<category>/<name>.png``; when that path does not exist under
            ``data_root``, the path after its first folder is tried, so ``data_root`` may also
            be the extracted folder itself under another name (DistillDIFT renames it
            ``PF-WILLOW/`` and keeps the CSV inside).
        csv: the pair file, relative to ``data_root`` or absolute. Columns: image A, image B,
            XA1..XA10, YA1..YA10, XB1..XB10, YB1..YB10 (42, with a header row).

    ``category`` is the image folder (``'car(G)'``; ``metainfo['classes']`` lists the ten) and
    ``class`` the object (``'car'``, ``'duck'``, ``'motorbike'``, ``'winebottle'``). ``pair_id`` is
    ``'<row>:<category>'`` (row from 0 in file order). Other keyword arguments go to mmengine's
    ``BaseDataset``.
    """

    METAINFO = dict(classes=PF_WILLOW_CATEGORIES, super_classes=PF_WILLOW_CLASSES)

    def __init__(self, data_root, csv='test_pairs_pf.csv', **kwargs):
        self.csv = csv
        super().__init__(data_root, **kwargs)

    def load_data_list(self):
        csv_path = self._root_path(self.csv)
        require_path(csv_path, 'the PF-WILLOW pair list (image A, image B and 40 keypoint '
                     'columns)', _FIX)
        _, rows = read_csv(csv_path, _FIX, n_columns=2 + 4 * NUM_KPS)
        sizes = SizeCache()
        data_list = []
        for index, row in enumerate(progress(rows, 'PF-WILLOW')):
            line = index + 2
            coords = np.asarray(parse_floats(row[2:], csv_path, line, _FIX)).reshape(4, NUM_KPS)
            src_kps = np.stack([coords[0], coords[1]], axis=1)
            trg_kps = np.stack([coords[2], coords[3]], axis=1)
            category = osp.basename(osp.dirname(row[0].strip().replace('\\', '/')))
            data_list.append(csv_pair(
                self.data_root, csv_path, _FIX, sizes, index, category, row[0], row[1],
                src_kps, trg_kps, **{'class': category.split('(')[0]}))
        return data_list
