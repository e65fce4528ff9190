"""What every reader of an official correspondence release shares: the error, the pair, paths.

The one rule: a reader returns pairs exactly as the data contract (``correspondence/README.md``) says (keypoints
``float32 [K, 2]`` in original pixels, only points visible in both images), and a file that is
missing or not in the release's format is a :class:`CorrespondenceDataError` that names the file,
what was expected and how to get it right, never a ``KeyError`` from deep inside a parser.
"""
import os.path as osp

import numpy as np
from mmengine.dataset import BaseDataset

from common.progress import progress

__all__ = ['CorrespondenceDataError', 'PairDataset', 'data_error', 'require_path', 'image_size',
           'visible_in_both', 'make_pair', 'read_json_record', 'progress']


class CorrespondenceDataError(ValueError):
    """A release file is missing or malformed; the message is one paragraph with the fix."""


def data_error(path, expected, fix):
    """``CorrespondenceDataError`` for ``path``: what was expected there and the fix."""
    return CorrespondenceDataError(f'{path}: expected {expected}. {fix}')


def require_path(path, expected, fix, kind='file', data_root=None, release=None):
    """``path`` if it is an existing file (``kind='file'``) or folder (``'dir'``), else the error.

    ``release``: the release's folder name; when the missing path's root holds a folder of that
    name, the message says that ``data_root`` is probably its parent."""
    exists = osp.isdir(path) if kind == 'dir' else osp.isfile(path)
    if not exists:
        what = 'folder' if kind == 'dir' else 'file'
        if data_root and release and osp.isdir(osp.join(data_root, release)):
            fix = (f'data_root looks like the parent of the release: set it to '
                   f'{osp.join(data_root, release)}.')
        raise data_error(path, f'{expected}, but no such {what} exists', fix)
    return path


def read_json_record(path, required, what, fix, hint=''):
    """The JSON object in ``path`` with at least the keys ``required``; a file that is not
    JSON, or lacks one of them, raises :class:`CorrespondenceDataError` naming ``path``,
    ``what`` was expected (and ``hint`` after the missing fields) and ``fix``."""
    import json
    try:
        with open(path, encoding='utf-8') as f:
            record = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise data_error(path, f'{what} in JSON ({exc})', fix) from exc
    missing = [k for k in required if not isinstance(record, dict) or k not in record]
    if missing:
        raise data_error(path, f'{what} with the fields {tuple(required)}, but {missing} are '
                         f'missing{hint}', fix)
    return record


def image_size(path):
    """``(W, H)`` of an image, from its header only (PIL decodes no pixels for ``.size``)."""
    from PIL import Image
    try:
        with Image.open(path) as image:
            return tuple(int(v) for v in image.size)
    except (OSError, ValueError) as exc:
        raise data_error(path, f'a readable image ({exc})',
                         'Re-extract the release archive; the file may be truncated.') from exc


def visible_in_both(src_kps, trg_kps):
    """Boolean mask of the points that are annotated in both images.

    A point counts as missing when any coordinate is non-finite or negative: the releases mark
    absent points with ``-1`` padding (PF-PASCAL copies), ``NaN`` or ``null``.
    """
    src = np.asarray(src_kps, dtype=np.float64).reshape(-1, 2)
    trg = np.asarray(trg_kps, dtype=np.float64).reshape(-1, 2)
    ok = np.isfinite(src).all(1) & np.isfinite(trg).all(1)
    with np.errstate(invalid='ignore'):
        ok &= (np.nan_to_num(src, nan=-1) >= 0).all(1) & (np.nan_to_num(trg, nan=-1) >= 0).all(1)
    return ok


def make_pair(pair_id, category, src_img_path, trg_img_path, src_imsize, trg_imsize, src_kps,
              trg_kps, kps_ids=None, src_bbox=None, trg_bbox=None, difficulty=None, **extra):
    """One pair dict of the contract, with types normalised (float32 kps, float bboxes)."""
    pair = dict(
        pair_id=str(pair_id),
        category=str(category),
        src_img_path=osp.abspath(src_img_path),
        trg_img_path=osp.abspath(trg_img_path),
        src_imsize=tuple(int(v) for v in src_imsize[:2]),
        trg_imsize=tuple(int(v) for v in trg_imsize[:2]),
        src_kps=np.asarray(src_kps, dtype=np.float32).reshape(-1, 2),
        trg_kps=np.asarray(trg_kps, dtype=np.float32).reshape(-1, 2),
        kps_ids=None if kps_ids is None else [int(i) for i in kps_ids],
        src_bbox=None if src_bbox is None else [float(v) for v in src_bbox],
        trg_bbox=None if trg_bbox is None else [float(v) for v in trg_bbox],
        difficulty=dict(difficulty or {}),
    )
    pair.update(extra)
    return pair




class PairDataset(BaseDataset):
    """``BaseDataset`` of correspondence pairs: ``data_root`` resolved, ``metainfo['classes']``.

    Subclasses read their files in ``load_data_list`` and set ``METAINFO = dict(classes=...)``.
    ``data_root`` is required: every release is read relative to it.
    """

    def __init__(self, data_root, metainfo=None, **kwargs):
        if not data_root:
            raise CorrespondenceDataError(
                f'{type(self).__name__}: data_root is empty; expected the folder of the extracted '
                'release. Set data_root in the dataset config.')
        kwargs.setdefault('serialize_data', True)
        super().__init__(data_root=osp.abspath(osp.expanduser(data_root)), metainfo=metainfo,
                         **kwargs)

    def _serialize_data(self):
        # mmengine cannot serialize an empty list; a filter may legitimately leave no pair
        if not self.data_list:
            return np.zeros(0, dtype=np.uint8), np.zeros(0, dtype=np.int64)
        return super()._serialize_data()

    def _root_path(self, path):
        """``path`` relative to ``data_root`` unless absolute."""
        path = osp.expanduser(path)
        return path if osp.isabs(path) else osp.join(self.data_root, path)
