"""Pairs where the semantic and the spatial answer disagree, built from PASCAL-Part (the reader).

The one rule: ``trg_kps`` is the **semantic** target (the same part, by name, of the target
subject) and ``trg_spatial_kps`` the **spatial** one (the opposite-side part: ``'lleg'`` <->
``'rleg'``); a model that matches by meaning lands on the first, one that matches by image
position or by mirror-blind appearance on the second. Both target part masks come with each pair
(``trg_part_masks``), so :class:`~correspondence.evaluation.disentangled_metric.DisentangledMetric`
can judge "lands inside the part".

The release is written by ``tools/dataset_converters/pascal_part_disentangled.py`` in SPair-71k's
layout, so :class:`~correspondence.datasets.SPair71kDataset` reads it too (semantic targets only)::

    OUT/JPEGImages/<class>/<image_id>.jpg           the VOC image, copied byte for byte
    OUT/JPEGImages/<class>/<image_id>_flip.png      its horizontal mirror (lossless)
    OUT/PairAnnotation/test/<n>-<src>-<trg>:<class>.json
    OUT/meta.json                                   builder arguments, counts, part names

A pair file holds SPair-71k's fields (``src_imname``, ``trg_imname``, ``src_imsize``/``trg_imsize``
``[W, H, 3]``, ``src_bndbox``/``trg_bndbox`` ``[x1, y1, x2, y2]`` of the subject's object mask,
``category``, ``src_kps``, ``trg_kps``, ``kps_ids``, the five difficulty flags, ``mirror`` = 1 for
mirrored pairs) plus:

* ``kind``: ``'mirrored'`` (an image against its own horizontal flip) or ``'cross'`` (two images
  of the class whose subjects lay their left/right parts out in opposite directions);
* ``kps_names``: the source part of each keypoint (``'leye'``), ``trg_spatial_names``: its
  opposite-side part (``'reye'``), ``trg_spatial_kps``: that part's keypoint in the target;
* ``trg_part_masks``: ``{part_name: RLE}`` of every target part named above (:func:`rle_encode`);
* ``src_object`` / ``trg_object``: the subject's index in ``anno.objects`` of its ``.mat`` file,
  ``src_layout`` / ``trg_layout``: +1 when the subject's left parts lie right of its right parts
  in the image (a frontal view), -1 otherwise.

Mirroring swaps the subject's sides: in the flipped image the mirrored subject's left leg is the
mirror image of the original right leg. So for a mirrored pair the semantic target of the source's
``'lleg'`` is the mirror of the source's ``'rleg'``, and the spatial target is the mirror of the
source point itself, ``(W - 1 - x, y)``, which lies on the flipped image's ``'rleg'``.
"""
import glob
import os.path as osp

import numpy as np
from mmengine.registry import DATASETS

from .base import (PairDataset, data_error, make_pair, progress, read_json_record,
                   require_path)

# PASCAL-Part classes whose parts come in left/right pairs (part names of the devkit's
# part2ind.m); the others (bicycle, bottle, chair, ...) have none.
DISENTANGLED_CLASSES = ('aeroplane', 'bird', 'bus', 'car', 'cat', 'cow', 'dog', 'horse',
                        'person', 'sheep', 'train')
PAIR_KINDS = ('mirrored', 'cross')
FORMAT_VERSION = 1
_EXTRA = ('kind', 'kps_names', 'trg_spatial_names', 'trg_spatial_kps', 'trg_part_masks')
_REQUIRED = ('src_imname', 'trg_imname', 'src_imsize', 'trg_imsize', 'src_bndbox', 'trg_bndbox',
             'category', 'src_kps', 'trg_kps') + _EXTRA
_FIX = ('Build the benchmark with tools/dataset_converters/pascal_part_disentangled.py '
        'PASCAL_PART_DIR VOC_JPEG_DIR OUT and set data_root to OUT.')


def counterpart(name):
    """The opposite-side part of a PASCAL-Part part name, or None when it has no side.

    ``'left'``/``'right'`` anywhere in the name swap (``'leftmirror'``, ``'hleftside'``,
    ``'cleftside_2'``); otherwise a leading ``'l'``/``'r'`` swaps (``'leye'`` -> ``'reye'``,
    ``'lfuleg'`` -> ``'rfuleg'``). The caller keeps a name only when its counterpart exists in
    the object, which rules out accidental matches such as ``'roofside'`` -> ``'loofside'``.
    """
    if 'left' in name:
        return name.replace('left', 'right', 1)
    if 'right' in name:
        return name.replace('right', 'left', 1)
    if len(name) > 1 and name[0] in 'lr':
        return {'l': 'r', 'r': 'l'}[name[0]] + name[1:]
    return None


def side_of(name):
    """``'left'``, ``'right'`` or None: which side of the subject the part is on."""
    if 'left' in name or (name[:1] == 'l' and 'right' not in name):
        return 'left'
    if 'right' in name or name[:1] == 'r':
        return 'right'
    return None


def rle_encode(mask):
    """COCO's uncompressed RLE of a binary ``[H, W]`` mask: ``{'size': [H, W], 'counts': [...]}``.

    ``counts`` are alternating run lengths of 0s and 1s over the mask in column-major (Fortran)
    order, starting with a (possibly empty) run of 0s; pycocotools reads it with
    ``frPyObjects``."""
    mask = np.asarray(mask).astype(bool)
    if mask.ndim != 2:
        raise ValueError(f'rle_encode: expected a [H, W] mask, got shape {mask.shape}.')
    flat = mask.ravel(order='F').astype(np.int8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return dict(size=[int(mask.shape[0]), int(mask.shape[1])], counts=[int(c) for c in counts])


def rle_decode(rle):
    """The ``bool [H, W]`` mask of :func:`rle_encode`'s RLE; a malformed RLE is a ``ValueError``."""
    try:
        h, w = (int(v) for v in rle['size'])
        counts = np.asarray(rle['counts'], dtype=np.int64).reshape(-1)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f'expected an uncompressed COCO RLE dict(size=[H, W], counts=[...]), got '
                         f'{str(rle)[:80]} ({exc})') from exc
    if (counts < 0).any() or counts.sum() != h * w:
        raise ValueError(f'RLE counts sum to {int(counts.sum())} (or are negative); a {h}x{w} '
                         f'mask needs {h * w}')
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape((h, w), order='F')


@DATASETS.register_module()
class DisentangledPairsDataset(PairDataset):
    """The semantic-vs-spatial pairs written by ``pascal_part_disentangled.py``.

    Args:
        data_root: the builder's output folder (``JPEGImages/``, ``PairAnnotation/test/``).
        categories: keep only these classes (default all; also ``metainfo['classes']``).
        kinds: keep only these pair kinds, of ``('mirrored', 'cross')`` (default both).
        split: the ``PairAnnotation`` sub-folder (the builder writes ``'test'``).

    Each pair is the data contract (``correspondence/README.md``) with ``trg_kps`` the semantic
    targets, plus ``kind``, ``kps_names``, ``trg_spatial_names``, ``trg_spatial_kps``
    (``float32 [K, 2]``), ``trg_part_masks`` (``{name: RLE}``) and ``trg_layout``. Other keyword
    arguments go to mmengine's ``BaseDataset`` (``pipeline``, ``indices``, ...).
    """

    METAINFO = dict(classes=DISENTANGLED_CLASSES)

    def __init__(self, data_root, categories=None, kinds=PAIR_KINDS, split='test',
                 metainfo=None, **kwargs):
        if categories is not None:
            categories = tuple(categories)
            unknown = sorted(set(categories) - set(DISENTANGLED_CLASSES))
            if unknown:
                raise ValueError(f'categories {unknown} are not classes of the disentangled '
                                 f'benchmark {DISENTANGLED_CLASSES}; fix the spelling or drop '
                                 'them.')
            metainfo = {**(metainfo or {}), 'classes': categories}
        kinds = (kinds, ) if isinstance(kinds, str) else tuple(kinds)
        unknown = sorted(set(kinds) - set(PAIR_KINDS))
        if unknown or not kinds:
            raise ValueError(f'kinds={kinds!r}: the pair kinds are {PAIR_KINDS}; give one or '
                             'both.')
        self.categories = categories
        self.kinds = kinds
        self.split = split
        super().__init__(data_root, metainfo=metainfo, **kwargs)

    def load_data_list(self):
        ann_dir = require_path(osp.join(self.data_root, 'PairAnnotation', self.split),
                               f'the disentangled pair files (PairAnnotation/{self.split}/*.json)',
                               _FIX, kind='dir')
        image_dir = require_path(osp.join(self.data_root, 'JPEGImages'),
                                 'the benchmark images (JPEGImages/<class>/)', _FIX, kind='dir')
        files = sorted(glob.glob(osp.join(glob.escape(ann_dir), '*.json')))
        if not files:
            raise data_error(ann_dir, 'files <n>-<src>-<trg>:<class>.json, found none', _FIX)
        wanted = set(self.categories or DISENTANGLED_CLASSES)
        data_list = []
        for path in progress(files, 'disentangled pairs'):
            name = osp.splitext(osp.basename(path))[0]
            if ':' in name and name.rsplit(':', 1)[1] not in wanted:
                continue
            pair = self._parse(path, image_dir)
            if pair['category'] in wanted and pair['kind'] in self.kinds:
                data_list.append(pair)
        return data_list

    def _parse(self, path, image_dir):
        ann = read_json_record(path, _REQUIRED, 'a disentangled pair file',
                               'Rebuild the benchmark; ' + _FIX,
                               hint=' (an SPair-71k file? read it with SPair71kDataset)')
        try:
            src_kps = np.asarray(ann['src_kps'], dtype=np.float32).reshape(-1, 2)
            trg_kps = np.asarray(ann['trg_kps'], dtype=np.float32).reshape(-1, 2)
            spatial = np.asarray(ann['trg_spatial_kps'], dtype=np.float32).reshape(-1, 2)
            names = [str(n) for n in ann['kps_names']]
            spatial_names = [str(n) for n in ann['trg_spatial_names']]
            sizes = {len(src_kps), len(trg_kps), len(spatial), len(names), len(spatial_names)}
            if len(sizes) != 1:
                raise ValueError('src_kps, trg_kps, trg_spatial_kps, kps_names and '
                                 'trg_spatial_names differ in length')
            masks = dict(ann['trg_part_masks'])
            absent = sorted(set(names + spatial_names) - set(masks))
            if absent:
                raise ValueError(f'trg_part_masks lacks {absent}')
            if ann['kind'] not in PAIR_KINDS:
                raise ValueError(f'kind {ann["kind"]!r} is not one of {PAIR_KINDS}')
        except (TypeError, ValueError) as exc:
            raise data_error(path, 'keypoint lists [[x, y], ...] of one length with kps_names '
                             'and trg_spatial_names, a mask per named part and a known kind '
                             f'({exc})', 'Rebuild the benchmark; ' + _FIX) from exc
        category = ann['category']
        return make_pair(
            pair_id=osp.splitext(osp.basename(path))[0],
            category=category,
            src_img_path=osp.join(image_dir, category, ann['src_imname']),
            trg_img_path=osp.join(image_dir, category, ann['trg_imname']),
            src_imsize=ann['src_imsize'], trg_imsize=ann['trg_imsize'],
            src_kps=src_kps, trg_kps=trg_kps,
            kps_ids=ann.get('kps_ids'),
            src_bbox=ann['src_bndbox'], trg_bbox=ann['trg_bndbox'],
            difficulty=dict(mirror=int(ann.get('mirror', 0))),
            kind=ann['kind'], kps_names=names, trg_spatial_names=spatial_names,
            trg_spatial_kps=spatial, trg_part_masks=masks,
            src_layout=ann.get('src_layout'), trg_layout=ann.get('trg_layout'))
