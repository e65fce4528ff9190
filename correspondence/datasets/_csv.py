"""CSV reading shared by the PF-WILLOW and PF-PASCAL readers: rows checked, paths resolved."""
import csv
import os.path as osp

import numpy as np

from .base import data_error, image_size


def read_csv(path, fix, n_columns=None, required=None):
    """``(header, rows)`` of a CSV with a header row; every row has the header's length.

    ``n_columns``: the exact number of columns expected; ``required``: header names that must be
    present. A violation is a ``CorrespondenceDataError`` naming the file and line.
    """
    try:
        with open(path, newline='', encoding='utf-8-sig') as f:
            lines = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise data_error(path, f'a readable CSV file ({exc})', fix) from exc
    if not lines:
        raise data_error(path, 'a header row and pairs, but the file is empty', fix)
    header, rows = [h.strip() for h in lines[0]], lines[1:]
    if n_columns is not None and len(header) != n_columns:
        raise data_error(path, f'{n_columns} columns, but the header row has {len(header)}', fix)
    if required is not None:
        missing = [name for name in required if name not in header]
        if missing:
            raise data_error(path, f'the columns {list(required)}, but {missing} are missing '
                             f'from the header {header}', fix)
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise data_error(path, f'{len(header)} columns in every row, but line {number} has '
                             f'{len(row)}', fix)
    return header, rows


def resolve_image(data_root, rel_path, csv_path, fix):
    """The image of a CSV cell: ``data_root/rel_path``, else ``data_root/<rel_path minus its
    first folder>`` (the release folder renamed, e.g. ``PF-dataset/`` → ``PF-WILLOW/`` with
    ``data_root`` pointing at it)."""
    rel_path = rel_path.strip().replace('\\', '/')
    candidates = [osp.join(data_root, rel_path)]
    if '/' in rel_path:
        candidates.append(osp.join(data_root, rel_path.split('/', 1)[1]))
    for candidate in candidates:
        if osp.isfile(candidate):
            return candidate
    raise data_error(csv_path, f'the image {rel_path!r} at one of {candidates}, but none exists',
                     fix)


class SizeCache:
    """Image sizes by path, each header read once."""

    def __init__(self):
        self._sizes = {}

    def __call__(self, path):
        if path not in self._sizes:
            self._sizes[path] = image_size(path)
        return self._sizes[path]


def parse_floats(values, csv_path, line, fix):
    try:
        return [float(v) for v in values]
    except ValueError as exc:
        raise data_error(csv_path, f'numbers in the keypoint columns, line {line} ({exc})',
                         fix) from exc


def csv_pair(data_root, csv_path, fix, sizes, index, category, src_rel, trg_rel, src_kps,
             trg_kps, **extra):
    """One pair of a PF-style CSV row as the data contract says: image paths resolved under
    ``data_root``, sizes from the headers (``sizes``: a :class:`SizeCache`), only the keypoints
    visible in both images, ``kps_ids`` their column indices, ``pair_id = '<row>:<category>'``."""
    from .base import make_pair, visible_in_both
    keep = visible_in_both(src_kps, trg_kps)
    src_path = resolve_image(data_root, src_rel, csv_path, fix)
    trg_path = resolve_image(data_root, trg_rel, csv_path, fix)
    return make_pair(
        pair_id=f'{index}:{category}', category=category, src_img_path=src_path,
        trg_img_path=trg_path, src_imsize=sizes(src_path), trg_imsize=sizes(trg_path),
        src_kps=src_kps[keep], trg_kps=trg_kps[keep], kps_ids=np.flatnonzero(keep).tolist(),
        **extra)

