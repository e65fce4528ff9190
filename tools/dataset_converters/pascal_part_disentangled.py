"""Build the semantic-vs-spatial ("disentangled") correspondence benchmark from PASCAL-Part.

    python tools/dataset_converters/pascal_part_disentangled.py PASCAL_PART_DIR VOC_JPEG_DIR OUT
        [--classes person cow ...] [--kinds mirrored cross] [--min-part-pixels 20]
        [--max-pairs 100] [--min-layout-gap 0.05] [--seed 0] [--ids FILE] [--overwrite]

Every pair is one where matching by meaning and matching by position give different answers:

* **mirrored**: an image against its horizontal flip (written to OUT as a PNG). Mirroring swaps
  the subject's sides, so the semantic target of the source's left leg is the flipped image's
  left leg, the mirror of the source's *right* leg; the spatial target (where the source point's
  own pixels went, ``(W - 1 - x, y)``) lies on the flipped image's right leg.
* **cross**: two different images of one class whose subjects lay out their left/right parts in
  opposite directions (the sign of the mean ``x_left - x_right`` over the subject's left/right
  part pairs, when it is at least ``--min-layout-gap`` of the subject's box width).

Keypoints are one per left/right part visible in both images (at least ``--min-part-pixels``
pixels): the part's centroid when the pixel it rounds to belongs to the part, else the part pixel
nearest to the centroid (so every keypoint lies inside its part). The output is SPair-71k's layout
with extra fields, described in ``correspondence/datasets/disentangled.py`` (read it with
``DisentangledPairsDataset``); ``OUT/meta.json`` records the arguments and the counts. OUT is
written all or nothing (``common/io/atomic_folder.py``).

The PASCAL-Part layout read (``trainval.tar.gz`` of http://roozbehm.info/pascal-parts/; images
are VOC2010's ``JPEGImages/<image_id>.jpg``): ``PASCAL_PART_DIR/Annotations_Part/<image_id>.mat``
(or ``.mat`` files directly in PASCAL_PART_DIR), each a MATLAB struct read with
``scipy.io.loadmat`` as ``anno = mat['anno'][0, 0]``::

    anno['imname'][0]                   image id, e.g. '2008_000001'
    anno['objects'][0, i]               one object (1 x N struct array)
        ['class'][0]                    'person', 'cow', ...
        ['class_ind'][0, 0]             VOC class index (1..20)
        ['mask']                        uint8 [H, W] object mask
        ['parts'][0, j]                 one part (1 x M struct array; empty when no parts)
            ['part_name'][0]            'leye', 'rleg', 'lfho', 'leftside', ...
            ['mask']                    uint8 [H, W] part mask

Part sides follow the subject's own left/right: a name containing ``left``/``right`` or starting
with ``l``/``r`` whose opposite-side name also occurs in the object (``correspondence``'s
``counterpart``). A malformed ``.mat`` (not a MATLAB file, no ``anno``, a field missing, a mask
of the wrong size) stops the build with its path and what is wrong (``--skip-malformed``: warn
and skip it instead).
"""
import json
import os
import os.path as osp
import shutil
import sys

_TOOLS_DIR = osp.dirname(osp.dirname(osp.abspath(__file__)))
if _TOOLS_DIR not in sys.path:
    sys.path.append(_TOOLS_DIR)  # appended: tools/test.py must not shadow anything
import _cli  # noqa: E402

_cli.make_repo_importable()

PROG = 'tools/dataset_converters/pascal_part_disentangled.py'
# = correspondence.datasets.disentangled.DISENTANGLED_CLASSES (not imported: --help stays light)
CLASSES = ('aeroplane', 'bird', 'bus', 'car', 'cat', 'cow', 'dog', 'horse', 'person', 'sheep',
           'train')
KINDS = ('mirrored', 'cross')
_FIX = ('Re-extract trainval.tar.gz of PASCAL-Part (http://roozbehm.info/pascal-parts/), or '
        'pass --skip-malformed to leave such files out.')


def parse_args(argv=None):
    parser = _cli.ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0])
    parser.add_argument('pascal_part_dir', help='folder holding Annotations_Part/<id>.mat')
    parser.add_argument('voc_jpeg_dir', help='VOC2010 JPEGImages folder (<id>.jpg)')
    parser.add_argument('out', help='output folder (SPair-71k layout), written atomically')
    parser.add_argument('--classes', nargs='+', choices=CLASSES, default=list(CLASSES),
                        metavar='CLASS', help=f'classes to use (default all: {" ".join(CLASSES)})')
    parser.add_argument('--kinds', nargs='+', choices=KINDS, default=list(KINDS),
                        help='pair kinds to build (default both)')
    parser.add_argument('--min-part-pixels', type=int, default=20, metavar='N',
                        help='ignore parts with fewer pixels (default 20)')
    parser.add_argument('--max-pairs', type=int, default=100, metavar='N',
                        help='at most N pairs per class and kind, a seeded draw (default 100)')
    parser.add_argument('--min-layout-gap', type=float, default=0.05, metavar='F',
                        help='cross pairs: a subject\'s left/right layout counts when the mean '
                        '|x_left - x_right| is at least F times its box width (default 0.05)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the draws (default 0)')
    parser.add_argument('--ids', metavar='FILE',
                        help='use only the image ids listed in FILE, one a line (e.g. VOC '
                        'ImageSets/Main/val.txt)')
    parser.add_argument('--skip-malformed', action='store_true',
                        help='warn about a malformed .mat or a missing image and skip it')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing OUT')
    args = parser.parse_args(argv)
    if args.max_pairs < 1:
        parser.error(f'--max-pairs {args.max_pairs}: use a positive number of pairs per class '
                     'and kind')
    if args.min_part_pixels < 1:
        parser.error(f'--min-part-pixels {args.min_part_pixels}: use 1 or more')
    if not 0 <= args.min_layout_gap < 1:
        parser.error(f'--min-layout-gap {args.min_layout_gap}: use a fraction in [0, 1)')
    return args


# ----------------------------------------------------------------------------- reading

def _text(value):
    import numpy as np
    value = np.asarray(value)
    if value.dtype.kind not in 'US' or value.size != 1:
        raise ValueError(f'a string, got {value.dtype} of shape {value.shape}')
    return str(value.reshape(-1)[0])


def _records(value):
    """The elements of a MATLAB struct array (``[]`` for an empty one)."""
    import numpy as np
    value = np.asarray(value)
    if value.size == 0:
        return []
    if value.dtype.names is None:
        raise ValueError(f'a struct array, got {value.dtype}')
    return list(value.reshape(-1))


def read_annotation(path):
    """One PASCAL-Part ``.mat`` file as ``dict(imname, objects=[dict(cls, class_ind, mask,
    parts=[(part_name, mask), ...])])``; masks are ``bool [H, W]`` (layout: module docstring).

    Raises :class:`~correspondence.datasets.CorrespondenceDataError` naming the file and what
    is wrong."""
    import numpy as np
    from scipy.io import loadmat

    from correspondence.datasets.base import data_error
    expected = ('a PASCAL-Part annotation (a MATLAB struct anno with imname and objects, each '
                'with class, class_ind, mask and parts of part_name and mask)')
    try:
        mat = loadmat(path)
    except Exception as exc:  # noqa: BLE001 - scipy raises several kinds for a bad file
        raise data_error(path, f'{expected}, but scipy.io.loadmat cannot read it '
                         f'({type(exc).__name__}: {exc})', _FIX) from exc
    where = 'anno'
    try:
        if 'anno' not in mat:
            raise KeyError(f'no variable anno (found {sorted(k for k in mat if k[:2] != "__")})')
        anno = mat['anno'].reshape(-1)[0]
        where = 'anno.imname'
        imname = _text(anno['imname'])
        objects, shape = [], None
        for i, obj in enumerate(_records(anno['objects'])):
            where = f'anno.objects({i + 1})'
            mask = np.asarray(obj['mask'])
            if mask.ndim != 2 or (shape is not None and mask.shape != shape):
                raise ValueError(f'mask of shape {mask.shape}, expected [H, W] '
                                 f'{"" if shape is None else shape}')
            shape = mask.shape
            parts = []
            for j, part in enumerate(_records(obj['parts'])):
                where = f'anno.objects({i + 1}).parts({j + 1})'
                part_mask = np.asarray(part['mask'])
                if part_mask.shape != shape:
                    raise ValueError(f'mask of shape {part_mask.shape}, the object\'s is {shape}')
                parts.append((_text(part['part_name']), part_mask > 0))
            objects.append(dict(cls=_text(obj['class']),
                                class_ind=int(np.asarray(obj['class_ind']).reshape(-1)[0]),
                                mask=mask > 0, parts=parts))
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        detail = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise data_error(path, f'{expected}; {where} is malformed ({detail})', _FIX) from exc
    return dict(imname=imname, objects=objects)


# ----------------------------------------------------------------------------- geometry

def part_keypoint(mask):
    """``(x, y)`` of a part: its centroid when the pixel it rounds to is in the part, else the
    part pixel nearest to the centroid (first in row-major order on ties)."""
    import numpy as np
    ys, xs = np.nonzero(mask)
    cx, cy = xs.mean(), ys.mean()
    rx, ry = int(np.floor(cx + 0.5)), int(np.floor(cy + 0.5))
    if mask[ry, rx]:
        return float(cx), float(cy)
    k = int(np.argmin((xs - cx) ** 2 + (ys - cy) ** 2))
    return float(xs[k]), float(ys[k])


def mask_box(mask):
    """``[x1, y1, x2, y2]`` (inclusive pixel indices) of a mask's pixels."""
    import numpy as np
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]


def _stored(rle):
    """An RLE with its counts as an ``int32`` array (thousands of subjects stay small)."""
    import numpy as np
    return dict(size=rle['size'], counts=np.asarray(rle['counts'], dtype=np.int32))


def _listed(rle):
    """The JSON form of a stored RLE."""
    return dict(size=list(rle['size']), counts=[int(c) for c in rle['counts']])


def subject(imname, index, obj, size, min_part_pixels):
    """The sided parts of one object: part RLEs, keypoints, box and left/right layout, or None.

    Only what the pairs need is kept (no full-size mask): a class may have thousands of
    subjects."""
    from correspondence.datasets.disentangled import counterpart, rle_encode, side_of
    masks = {}
    for name, mask in obj['parts']:
        masks[name] = masks[name] | mask if name in masks else mask  # a repeated name: union
    masks = {n: m for n, m in masks.items() if int(m.sum()) >= min_part_pixels}
    sided = {n: m for n, m in masks.items() if counterpart(n) in masks}
    if not sided or not obj['mask'].any():
        return None
    kps = {n: part_keypoint(m) for n, m in sided.items()}
    box = mask_box(obj['mask'])
    gaps = [kps[n][0] - kps[counterpart(n)][0] for n in sided if side_of(n) == 'left']
    gap = sum(gaps) / len(gaps) / max(box[2] - box[0] + 1, 1) if gaps else 0.0
    return dict(imname=imname, index=index, cls=obj['cls'], size=size, kps=kps, box=box,
                gap=gap, rles={n: _stored(rle_encode(m)) for n, m in sided.items()})


def mirror_point(point, width):
    return (width - 1 - point[0], point[1])


def mirrored_pair(s):
    """Source = the subject, target = its horizontal flip (sides swapped, see the docstring)."""
    import numpy as np

    from correspondence.datasets.disentangled import counterpart, rle_decode, rle_encode
    w = s['size'][0]
    names = sorted(s['kps'])
    return dict(
        kind='mirrored', src=s, trg_imname=f'{s["imname"]}_flip.png', trg_size=s['size'],
        trg_box=[w - 1 - s['box'][2], s['box'][1], w - 1 - s['box'][0], s['box'][3]],
        names=names,
        src_kps=[s['kps'][n] for n in names],
        trg_kps=[mirror_point(s['kps'][counterpart(n)], w) for n in names],
        spatial_kps=[mirror_point(s['kps'][n], w) for n in names],
        masks={n: rle_encode(np.fliplr(rle_decode(s['rles'][counterpart(n)])))
               for n in names},
        trg_object=s['index'], trg_layout=-layout_sign(s, 0.0))


def cross_pair(s, t):
    """Source subject ``s``, target subject ``t`` of another image; None without common part."""
    from correspondence.datasets.disentangled import counterpart
    names = sorted(n for n in s['kps'] if n in t['kps'] and counterpart(n) in t['kps'])
    if not names:
        return None
    masks = {}
    for n in names:
        for m in (n, counterpart(n)):
            masks[m] = _listed(t['rles'][m])
    return dict(
        kind='cross', src=s, trg_imname=f'{t["imname"]}.jpg', trg_size=t['size'],
        trg_box=t['box'], names=names, src_kps=[s['kps'][n] for n in names],
        trg_kps=[t['kps'][n] for n in names],
        spatial_kps=[t['kps'][counterpart(n)] for n in names], masks=masks,
        trg_object=t['index'], trg_layout=layout_sign(t, 0.0), trg=t)


def layout_sign(s, min_gap):
    """+1 (left parts right of right parts: frontal), -1, or 0 when ``|gap| < min_gap``."""
    if abs(s['gap']) < min_gap or s['gap'] == 0:
        return 0
    return 1 if s['gap'] > 0 else -1


# ----------------------------------------------------------------------------- building

def _annotation_files(pascal_part_dir, ids):
    import glob
    folder = osp.join(pascal_part_dir, 'Annotations_Part')
    if not osp.isdir(folder):
        folder = pascal_part_dir
    if not osp.isdir(folder):
        raise _cli.RunError(f'{pascal_part_dir}: expected the PASCAL-Part folder holding '
                            'Annotations_Part/<image_id>.mat, but no such folder exists. '
                            'Extract trainval.tar.gz of http://roozbehm.info/pascal-parts/ '
                            'and pass the folder it creates.')
    files = sorted(glob.glob(osp.join(glob.escape(folder), '*.mat')))
    if ids is not None:
        files = [f for f in files if osp.splitext(osp.basename(f))[0] in ids]
    if not files:
        raise _cli.RunError(f'{folder}: expected PASCAL-Part annotations <image_id>.mat'
                            f'{" of the --ids images" if ids is not None else ""}, found none. '
                            'Pass the folder of the extracted trainval.tar.gz (it holds '
                            'Annotations_Part/).')
    return files


def _read_ids(path):
    try:
        with open(path, encoding='utf-8') as f:
            return {line.split()[0] for line in f if line.strip()}
    except OSError as exc:
        raise _cli.RunError(f'--ids {path}: expected a text file of image ids, one a line, but it '
                            f'cannot be read ({exc}).') from exc


def collect_subjects(files, voc_jpeg_dir, classes, min_part_pixels, skip_malformed, log):
    """``{class: [subject, ...]}`` in file and object order, plus the image paths by id."""
    from correspondence.datasets.base import (CorrespondenceDataError, image_size, progress,
                                              require_path)
    subjects = {c: [] for c in classes}
    images = {}
    for path in progress(files, 'PASCAL-Part'):
        try:
            ann = read_annotation(path)
            wanted = [(i, o) for i, o in enumerate(ann['objects']) if o['cls'] in subjects]
            if not wanted:
                continue
            image = require_path(osp.join(voc_jpeg_dir, ann['imname'] + '.jpg'),
                                 f'the VOC image of {osp.basename(path)}',
                                 'Pass the VOC2010 JPEGImages folder as VOC_JPEG_DIR.')
            size = image_size(image)
            shape = wanted[0][1]['mask'].shape
            if (shape[1], shape[0]) != size:
                raise CorrespondenceDataError(
                    f'{path}: expected masks of the image\'s size {size} (W, H), got '
                    f'{(shape[1], shape[0])}. The annotation and {image} do not belong together; '
                    'check that VOC_JPEG_DIR is VOC2010\'s JPEGImages.')
        except CorrespondenceDataError as err:
            if not skip_malformed:
                raise
            log(f'WARNING skipped: {err}')
            continue
        images[ann['imname']] = image
        for index, obj in wanted:
            s = subject(ann['imname'], index, obj, size, min_part_pixels)
            if s is not None:
                subjects[obj['cls']].append(s)
    return subjects, images


def draw_pairs(subjects, kinds, max_pairs, min_layout_gap, rng):
    """The pairs of one class: up to ``max_pairs`` mirrored and ``max_pairs`` cross pairs."""
    import numpy as np
    pairs = []
    if 'mirrored' in kinds:
        picked = range(len(subjects))
        if len(subjects) > max_pairs:
            picked = np.sort(rng.choice(len(subjects), size=max_pairs, replace=False))
        pairs += [mirrored_pair(subjects[int(i)]) for i in picked]
    if 'cross' in kinds:
        front = [s for s in subjects if layout_sign(s, min_layout_gap) > 0]
        back = [s for s in subjects if layout_sign(s, min_layout_gap) < 0]
        n = len(front) * len(back)
        if n:
            # ordered pairs: index i < n is front -> back, i >= n back -> front
            draw = rng.choice(2 * n, size=min(2 * n, max(50 * max_pairs, 1000)), replace=False)
            kept = []
            for i in draw:
                a, b = front[int(i) % n // len(back)], back[int(i) % n % len(back)]
                s, t = (a, b) if i < n else (b, a)
                if s['imname'] == t['imname']:
                    continue
                pair = cross_pair(s, t)
                if pair is not None:
                    kept.append((int(i), pair))
                if len(kept) == max_pairs:
                    break
            pairs += [p for _, p in sorted(kept, key=lambda item: item[0])]
    return pairs


def pair_json(number, cls, pair, part_ids):
    """The pair file: SPair-71k's fields plus the disentangled ones."""
    s = pair['src']
    src_imname = f'{s["imname"]}.jpg'
    mirrored = pair['kind'] == 'mirrored'
    from correspondence.datasets.disentangled import counterpart
    stem = f'{number:06d}-{s["imname"]}-{osp.splitext(pair["trg_imname"])[0]}:{cls}'
    ann = dict(
        pair_id=number, filename=stem, category=cls, kind=pair['kind'],
        src_imname=src_imname, trg_imname=pair['trg_imname'],
        src_imsize=[*s['size'], 3], trg_imsize=[*pair['trg_size'], 3],
        src_bndbox=s['box'], trg_bndbox=pair['trg_box'],
        src_pose='Unspecified', trg_pose='Unspecified',
        src_kps=[list(p) for p in pair['src_kps']], trg_kps=[list(p) for p in pair['trg_kps']],
        kps_ids=[part_ids[n] for n in pair['names']],
        kps_names=pair['names'], trg_spatial_names=[counterpart(n) for n in pair['names']],
        trg_spatial_kps=[list(p) for p in pair['spatial_kps']],
        trg_part_masks=pair['masks'],
        src_object=s['index'], trg_object=pair['trg_object'],
        src_layout=layout_sign(s, 0.0), trg_layout=pair['trg_layout'],
        src_annotation=f'Annotations_Part/{s["imname"]}.mat',
        trg_annotation=f'Annotations_Part/{(s if mirrored else pair["trg"])["imname"]}.mat',
        viewpoint_variation=0, scale_variation=0, truncation=0, occlusion=0,
        mirror=int(mirrored))
    return stem, ann


def write_release(tmp, by_class, images, args_record, log):
    """Images, pair files and ``meta.json`` of the release into the folder ``tmp``."""
    import numpy as np
    from PIL import Image

    from correspondence.datasets.disentangled import FORMAT_VERSION
    from correspondence.datasets.base import progress
    ann_dir = osp.join(tmp, 'PairAnnotation', 'test')
    os.makedirs(ann_dir)
    number, counts, part_names = 0, {}, {}
    total = sum(len(p) for p in by_class.values())
    todo = ((cls, pair) for cls, pairs in by_class.items() for pair in pairs)
    ids = {cls: {n: i for i, n in enumerate(sorted({n for p in pairs for n in p['names']}))}
           for cls, pairs in by_class.items()}
    for cls, pair in progress(todo, 'pairs', total=total):
        folder = osp.join(tmp, 'JPEGImages', cls)
        os.makedirs(folder, exist_ok=True)
        src = pair['src']['imname']
        for imname in {src, pair.get('trg', pair['src'])['imname']}:
            dest = osp.join(folder, imname + '.jpg')
            if not osp.exists(dest):
                shutil.copyfile(images[imname], dest)
        if pair['kind'] == 'mirrored':
            dest = osp.join(folder, pair['trg_imname'])
            if not osp.exists(dest):
                with Image.open(images[src]) as image:
                    rgb = np.asarray(image.convert('RGB'))
                Image.fromarray(np.ascontiguousarray(rgb[:, ::-1])).save(dest)
        number += 1
        stem, ann = pair_json(number, cls, pair, ids[cls])
        with open(osp.join(ann_dir, stem + '.json'), 'w', encoding='utf-8') as f:
            json.dump(ann, f)
        counts.setdefault(cls, {k: 0 for k in KINDS})[pair['kind']] += 1
        part_names[cls] = sorted(ids[cls], key=ids[cls].get)
    meta = dict(format_version=FORMAT_VERSION, builder=PROG, arguments=args_record,
                pairs=number, counts=counts, part_names=part_names)
    with open(osp.join(tmp, 'meta.json'), 'w', encoding='utf-8') as f:
        json.dump(meta, f, indent=1)
    return meta


def build(pascal_part_dir, voc_jpeg_dir, out, classes=CLASSES, kinds=KINDS,
          min_part_pixels=20, max_pairs=100, min_layout_gap=0.05, seed=0, ids=None,
          skip_malformed=False, overwrite=False, log=print):
    """Build the benchmark into ``out``; returns the ``meta.json`` dict. See the docstring."""
    import numpy as np

    from common.io.atomic_folder import atomic_folder, check_destination
    out = check_destination(out, overwrite)  # before the long read
    if not osp.isdir(voc_jpeg_dir):
        raise _cli.RunError(f'{voc_jpeg_dir}: expected the VOC2010 JPEGImages folder '
                            '(<image_id>.jpg), but no such folder exists. Pass '
                            'VOCdevkit/VOC2010/JPEGImages.')
    files = _annotation_files(pascal_part_dir, ids)
    subjects, images = collect_subjects(files, voc_jpeg_dir, classes, min_part_pixels,
                                        skip_malformed, log)
    rng = np.random.default_rng(seed)
    by_class = {}
    for cls in CLASSES:  # one generator walked in a fixed class order
        if cls in classes:
            pairs = draw_pairs(subjects[cls], kinds, max_pairs, min_layout_gap, rng)
            if pairs:
                by_class[cls] = pairs
    if not by_class:
        raise _cli.RunError(
            f'no pair could be built from {len(files)} annotation files for classes '
            f'{list(classes)}: no object has a left/right part pair of at least '
            f'{min_part_pixels} pixels' + (' (and no two subjects face opposite ways)'
                                           if list(kinds) == ['cross'] else '')
            + '. Lower --min-part-pixels or add classes; nothing was written.')
    record = dict(pascal_part_dir=osp.abspath(pascal_part_dir),
                  voc_jpeg_dir=osp.abspath(voc_jpeg_dir), classes=list(classes),
                  kinds=list(kinds), min_part_pixels=min_part_pixels, max_pairs=max_pairs,
                  min_layout_gap=min_layout_gap, seed=seed)
    with atomic_folder(out, overwrite=overwrite) as tmp:
        meta = write_release(tmp, by_class, images, record, log)
    log(f'wrote {meta["pairs"]} pairs ' + ', '.join(
        f'{c}: {v["mirrored"]} mirrored + {v["cross"]} cross' for c, v in meta['counts'].items())
        + f' to {out}')
    return meta


def main(argv=None):
    args = parse_args(argv)
    ids = _read_ids(args.ids) if args.ids else None
    from common.io.atomic_folder import FolderExistsError
    from correspondence.datasets.base import CorrespondenceDataError
    try:
        build(args.pascal_part_dir, args.voc_jpeg_dir, args.out, classes=tuple(args.classes),
              kinds=tuple(args.kinds), min_part_pixels=args.min_part_pixels,
              max_pairs=args.max_pairs, min_layout_gap=args.min_layout_gap, seed=args.seed,
              ids=ids, skip_malformed=args.skip_malformed, overwrite=args.overwrite,
              log=lambda msg: print(msg, file=sys.stderr))
    except (CorrespondenceDataError, FolderExistsError) as err:
        raise _cli.RunError(str(err)) from err


if __name__ == '__main__':
    sys.exit(_cli.run_cli(PROG, main))
