"""SPair-71k pairs read from the release as extracted (``PairAnnotation/<split>/*.json``).

The one rule: keypoints are the release's mutually visible points (``kps_ids``) in original
pixels; the PCK threshold's bbox is the release's ``[x1, y1, x2, y2]`` (use the **target** box,
as the devkit does). Images are not opened: their sizes are in the pair files.
"""
import glob
import os.path as osp

import numpy as np
from mmengine.registry import DATASETS

from .base import (PairDataset, data_error, make_pair, progress, read_json_record,
                   require_path, visible_in_both)

SPAIR_CATEGORIES = ('aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat',
                    'chair', 'cow', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep',
                    'train', 'tvmonitor')
SPAIR_SPLITS = ('trn', 'val', 'test')
SPAIR_DIFFICULTY = ('viewpoint_variation', 'scale_variation', 'truncation', 'occlusion', 'mirror')
_REQUIRED = ('src_imname', 'trg_imname', 'src_imsize', 'trg_imsize', 'src_bndbox', 'trg_bndbox',
             'category', 'src_kps', 'trg_kps', 'kps_ids')
_FIX = ('Download http://cvlab.postech.ac.kr/research/SPair-71k/data/SPair-71k.tar.gz, extract '
        'it and set data_root to the SPair-71k folder (the one holding JPEGImages/ and '
        'PairAnnotation/).')


@DATASETS.register_module()
class SPair71kDataset(PairDataset):
    """SPair-71k (18 categories; the test split has 12,234 pairs).

    Args:
        data_root: the extracted ``SPair-71k`` folder (``JPEGImages/``, ``PairAnnotation/``).
        split: ``'test'``, ``'trn'`` or ``'val'`` (the release's folder names).
        categories: keep only these categories (default all 18); also ``metainfo['classes']``.
            A release written in SPair-71k's format with other categories (the digits demo's,
            ``tools/demo_correspondence.py``) names them all in ``metainfo=dict(classes=...)``.
        difficulty: keep only pairs whose flags match, e.g. ``dict(viewpoint_variation=2)``;
            a value may be a list of accepted levels. Keys: ``viewpoint_variation``,
            ``scale_variation``, ``truncation``, ``occlusion``, ``mirror``.
        max_pairs_per_category: keep at most this many pairs per category, drawn with
            ``numpy.random.default_rng(seed)`` (one generator walked over the categories in
            ``SPAIR_CATEGORIES`` order, pairs in file-name order). ``None``: all pairs.
        seed: the seed of that draw.
        replace: draw **with** replacement (duplicates possible, so ``pair_id`` may repeat), as
            SD-DINO's ``--SAMPLE`` does with ``np.random.choice``. Off by default: a sample with
            repeated pairs over-weights them. SD-DINO's exact sample is not reproduced (other
            generator and file order); with ``max_pairs_per_category=None`` (their
            ``--SAMPLE 0``, the paper setting) the pairs are identical.

    Each pair carries ``difficulty`` (the five flags, ints), ``src_pose``/``trg_pose`` and the
    release's ``kps_ids``. Other keyword arguments go to mmengine's ``BaseDataset``.
    """

    METAINFO = dict(classes=SPAIR_CATEGORIES)

    def __init__(self, data_root, split='test', categories=None, difficulty=None,
                 max_pairs_per_category=None, seed=0, replace=False, metainfo=None, **kwargs):
        if split not in SPAIR_SPLITS:
            raise ValueError(f'split={split!r}: SPair-71k splits are {SPAIR_SPLITS}.')
        known = tuple((metainfo or {}).get('classes', SPAIR_CATEGORIES))
        if categories is not None:
            categories = tuple(categories)
            unknown = sorted(set(categories) - set(known))
            if unknown:
                raise ValueError(f'categories {unknown} are not SPair-71k categories {known} '
                                 '(or, for another release in this format, not in metainfo\'s '
                                 'classes).')
            metainfo = {**(metainfo or {}), 'classes': categories}
        self.known_categories = known
        unknown = sorted(set(difficulty or {}) - set(SPAIR_DIFFICULTY))
        if unknown:
            raise ValueError(f'difficulty keys {unknown} are not SPair-71k flags '
                             f'{SPAIR_DIFFICULTY}.')
        self.split = split
        self.categories = categories
        self.difficulty = dict(difficulty or {})
        self.max_pairs_per_category = max_pairs_per_category
        self.seed = seed
        self.replace = replace
        super().__init__(data_root, metainfo=metainfo, **kwargs)

    def _matches(self, flags):
        for key, wanted in self.difficulty.items():
            accepted = wanted if isinstance(wanted, (list, tuple, set)) else (wanted,)
            if flags[key] not in {int(v) for v in accepted}:
                return False
        return True

    def load_data_list(self):
        ann_dir = osp.join(self.data_root, 'PairAnnotation', self.split)
        require_path(ann_dir, f'the SPair-71k pair annotations of split {self.split!r} '
                     '(PairAnnotation/<split>/*.json)', _FIX, kind='dir',
                     data_root=self.data_root, release='SPair-71k')
        image_dir = require_path(osp.join(self.data_root, 'JPEGImages'),
                                 'the SPair-71k images (JPEGImages/<category>/*.jpg)', _FIX,
                                 kind='dir')
        files = sorted(glob.glob(osp.join(glob.escape(ann_dir), '*.json')))
        if not files:
            raise data_error(ann_dir, 'files <pair_id>-<src>-<trg>:<category>.json, found none',
                             _FIX)
        wanted = set(self.categories or self.known_categories)
        by_category = {}
        for path in progress(files, f'SPair-71k {self.split}'):
            # file names end in ':<category>.json': skip other categories without parsing
            name = osp.splitext(osp.basename(path))[0]
            if ':' in name and name.rsplit(':', 1)[1] not in wanted:
                continue
            pair = self._parse(path, image_dir)
            if pair['category'] in wanted and self._matches(pair['difficulty']):
                by_category.setdefault(pair['category'], []).append(pair)
        return self._sample(by_category)

    def _sample(self, by_category):
        order = [c for c in (self.categories or self.known_categories) if c in by_category]
        if self.max_pairs_per_category is None:
            return [pair for c in order for pair in by_category[c]]
        rng = np.random.default_rng(self.seed)
        data_list = []
        for category in order:
            pairs = by_category[category]
            size = self.max_pairs_per_category
            if not self.replace:
                size = min(size, len(pairs))
            picked = rng.choice(len(pairs), size=size, replace=self.replace)
            if not self.replace:
                picked = np.sort(picked)  # keep file order within a category
            data_list.extend(pairs[int(i)] for i in picked)
        return data_list

    def _parse(self, path, image_dir):
        ann = read_json_record(path, _REQUIRED, 'a SPair-71k pair annotation',
                               'Re-extract the release; ' + _FIX)
        try:
            src_kps = np.asarray(ann['src_kps'], dtype=np.float64).reshape(-1, 2)
            trg_kps = np.asarray(ann['trg_kps'], dtype=np.float64).reshape(-1, 2)
            kps_ids = [int(i) for i in ann['kps_ids']]
            if not len(src_kps) == len(trg_kps) == len(kps_ids):
                raise ValueError(f'{len(src_kps)} src_kps, {len(trg_kps)} trg_kps and '
                                 f'{len(kps_ids)} kps_ids')
            src_bbox = [float(v) for v in ann['src_bndbox']]
            trg_bbox = [float(v) for v in ann['trg_bndbox']]
            if len(src_bbox) != 4 or len(trg_bbox) != 4:
                raise ValueError('bndbox is not [x1, y1, x2, y2]')
            difficulty = {k: int(ann.get(k, 0)) for k in SPAIR_DIFFICULTY}
        except (TypeError, ValueError) as exc:
            raise data_error(path, 'src_kps/trg_kps as lists of [x, y] of one length with '
                             f'kps_ids, bndboxes [x1, y1, x2, y2] and integer flags ({exc})',
                             'Re-extract the release; ' + _FIX) from exc
        # the release lists only mutually visible points; drop any other as a guard
        keep = visible_in_both(src_kps, trg_kps)
        category = ann['category']
        pair_id = osp.splitext(osp.basename(path))[0]  # unique; the JSON's pair_id is not
        return make_pair(
            pair_id=pair_id,
            category=category,
            src_img_path=osp.join(image_dir, category, ann['src_imname']),
            trg_img_path=osp.join(image_dir, category, ann['trg_imname']),
            src_imsize=ann['src_imsize'],
            trg_imsize=ann['trg_imsize'],
            src_kps=src_kps[keep],
            trg_kps=trg_kps[keep],
            kps_ids=[i for i, k in zip(kps_ids, keep) if k],
            src_bbox=src_bbox,
            trg_bbox=trg_bbox,
            difficulty=difficulty,
            src_pose=ann.get('src_pose'),
            trg_pose=ann.get('trg_pose'),
        )
