"""CUB-200-2011 keypoint pairs built from the release's text files (DistillDIFT's protocol).

The one rule: part locations and boxes are used **as stored** in ``parts/part_locs.txt`` and
``bounding_boxes.txt``, without a 1-based → 0-based shift. The CUB README states no pixel origin
for its crowd-sourced clicks and no reference in our research notes (DistillDIFT, Hedlin et al.)
shifts them, so reading them as stored keeps PCK comparable with theirs; a one-pixel shift of
both images' points is small next to CUB thresholds (0.1 x a box side of tens of pixels or more).
"""
import itertools
import os.path as osp

import numpy as np
from mmengine.registry import DATASETS

from ._csv import SizeCache
from .base import PairDataset, data_error, make_pair, require_path

NUM_PARTS = 15
_FIX = ('Download https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz, extract '
        'it and set data_root to the CUB_200_2011 folder (the one holding images.txt).')


def _read_table(path, columns, what, dtype=float):
    """The rows of a whitespace-separated CUB table with ``columns`` fields per line: tuples of
    floats, or ``(int id, rest of the line)`` with ``dtype=str`` (paths, class names)."""
    what = f'CUB-200-2011 {osp.basename(path)} ({what})'
    require_path(path, what, _FIX, data_root=osp.dirname(path), release='CUB_200_2011')
    rows = []
    with open(path, encoding='utf-8') as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            fields = line.split(None, columns - 1) if dtype is str else line.split()
            if len(fields) != columns:
                raise data_error(path, f'{what} with {columns} fields per line, line {number} '
                                 f'has {len(fields)} ({line.strip()!r})', _FIX)
            try:
                if dtype is str:
                    rows.append((int(fields[0]), fields[1].strip()))
                else:
                    rows.append(tuple(float(v) for v in fields))
            except ValueError as exc:
                raise data_error(path, f'{what} with numbers, line {number} is '
                                 f'{line.strip()!r}', _FIX) from exc
    return rows


@DATASETS.register_module()
class CUBPairsDataset(PairDataset):
    """Pairs of CUB-200-2011 birds of one class, with their 15 part locations.

    Args:
        data_root: the extracted ``CUB_200_2011`` folder (``images.txt``, ``images/``, ...).
        split: ``'test'`` (``is_training_image == 0``), ``'train'`` or ``'all'``.
        num_pairs: keep this many pairs: all ordered-by-id pairs ``(a, b)``, ``a < b``, of images
            of one class (``itertools.combinations`` per class, classes in id order) that share
            at least ``min_kps`` visible parts are shuffled with
            ``numpy.random.default_rng(seed).permutation`` and the first ``num_pairs`` kept, in
            shuffled order. ``None``: all pairs, unshuffled.
        seed: 42 as DistillDIFT (whose own generator and pair order differ, so the sample is
            the same protocol, not the same pairs).
        min_kps: pairs with fewer common visible parts are dropped before the draw.

    ``category`` is the class folder name (``'001.Black_footed_Albatross'``), ``kps_ids`` the
    part ids (1..15), bboxes ``[x, y, x + w, y + h]``. ``pair_id`` is ``'<src_id>-<trg_id>:
    <class>'``. Image sizes are read from the image headers of the kept pairs only.
    """

    METAINFO = dict(classes=())

    def __init__(self, data_root, num_pairs=1000, seed=42, split='test', min_kps=1,
                 metainfo=None, **kwargs):
        if split not in ('test', 'train', 'all'):
            raise ValueError(f"split={split!r}: CUB splits are 'test', 'train', 'all'.")
        self.num_pairs = num_pairs
        self.seed = seed
        self.split = split
        self.min_kps = min_kps
        root = osp.abspath(osp.expanduser(data_root)) if data_root else data_root
        self._class_names = self._read_classes(root) if root else {}
        classes = tuple(self._class_names[k] for k in sorted(self._class_names))
        metainfo = dict(classes=classes, **(metainfo or {}))
        super().__init__(data_root, metainfo=metainfo, **kwargs)

    @staticmethod
    def _read_classes(root):
        return dict(_read_table(osp.join(root, 'classes.txt'), 2, 'class ids and names',
                                dtype=str))

    def load_data_list(self):
        root = self.data_root
        images = dict(_read_table(osp.join(root, 'images.txt'), 2, 'image ids and paths',
                                  dtype=str))
        is_train = {int(i): int(t) for i, t in _read_table(
            osp.join(root, 'train_test_split.txt'), 2, 'image ids and is_training_image flags')}
        labels = {int(i): int(c) for i, c in _read_table(
            osp.join(root, 'image_class_labels.txt'), 2, 'image ids and class ids')}
        boxes = {int(r[0]): r[1:] for r in _read_table(
            osp.join(root, 'bounding_boxes.txt'), 5, 'image ids and boxes x y w h')}
        locs_path = osp.join(root, 'parts', 'part_locs.txt')
        locs = np.asarray(_read_table(locs_path, 5, 'image id, part id, x, y, visible'))
        ids = sorted(images)
        for name, table in (('train_test_split.txt', is_train), ('image_class_labels.txt', labels),
                            ('bounding_boxes.txt', boxes)):
            missing = sorted(set(ids) - set(table))
            if missing:
                raise data_error(osp.join(root, name), f'a line for every image of images.txt, '
                                 f'but ids {missing[:5]} are missing', _FIX)
        row_of = {image_id: n for n, image_id in enumerate(ids)}
        xy = np.zeros((len(ids), NUM_PARTS, 2))
        vis = np.zeros((len(ids), NUM_PARTS), dtype=bool)
        for image_id, part_id, x, y, visible in locs:
            image_id, part_id = int(image_id), int(part_id)
            if image_id not in row_of or not 1 <= part_id <= NUM_PARTS:
                raise data_error(locs_path, f'image ids of images.txt and part ids 1..{NUM_PARTS}, '
                                 f'got image {image_id} part {part_id}', _FIX)
            xy[row_of[image_id], part_id - 1] = (x, y)
            vis[row_of[image_id], part_id - 1] = visible > 0

        wanted = {'test': (0,), 'train': (1,), 'all': (0, 1)}[self.split]
        by_class = {}
        for image_id in ids:
            if is_train[image_id] in wanted:
                by_class.setdefault(labels[image_id], []).append(image_id)
        pairs = [(a, b) for label in sorted(by_class)
                 for a, b in itertools.combinations(by_class[label], 2)
                 if (vis[row_of[a]] & vis[row_of[b]]).sum() >= self.min_kps]
        if self.num_pairs is not None:
            order = np.random.default_rng(self.seed).permutation(len(pairs))
            pairs = [pairs[int(i)] for i in order[:self.num_pairs]]

        sizes = SizeCache()
        data_list = []
        for a, b in pairs:
            both = vis[row_of[a]] & vis[row_of[b]]
            category = self._class_names.get(labels[a], str(labels[a]))
            src_path = osp.join(root, 'images', images[a])
            trg_path = osp.join(root, 'images', images[b])
            data_list.append(make_pair(
                pair_id=f'{a}-{b}:{category}',
                category=category,
                src_img_path=src_path,
                trg_img_path=trg_path,
                src_imsize=sizes(src_path),
                trg_imsize=sizes(trg_path),
                src_kps=xy[row_of[a]][both],
                trg_kps=xy[row_of[b]][both],
                kps_ids=(np.flatnonzero(both) + 1).tolist(),
                src_bbox=self._xyxy(boxes[a]),
                trg_bbox=self._xyxy(boxes[b]),
            ))
        return data_list

    @staticmethod
    def _xyxy(box):
        x, y, w, h = box
        return [x, y, x + w, y + h]
