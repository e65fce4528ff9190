"""Convert the CelebAMask-HQ release into mmseg's ``img_dir``/``ann_dir`` layout.

Usage::

    python tools/dataset_converters/celebamask_hq.py SRC OUT [--workers N] [--size 512]

``SRC`` holds the release as downloaded (plus CelebA's partition file)::

    SRC/CelebA-HQ-img/<id>.jpg                                  ids 0..29999
    SRC/CelebAMask-HQ-mask-anno/<0..14>/<id:05d>_<part>.png     one binary mask per part
    SRC/CelebA-HQ-to-CelebA-mapping.txt                         idx orig_idx orig_file
    SRC/list_eval_partition.txt                                 <orig_file> <0|1|2>  (from CelebA)

and ``OUT`` receives::

    OUT/img_dir/{train,val,test}/<id>.jpg      resized to SIZE x SIZE (the masks' frame)
    OUT/ann_dir/{train,val,test}/<id>.png      uint8 labels 0..18 (0 = background)
    OUT/conversion_report.txt                  every file that could not be used, by name

* Labels: the 19 classes of ``segmentation.datasets.celebamask_hq.CLASSES``. A pixel belongs to a
  part where the part's mask is non-zero; where masks overlap, the part painted last in
  ``PAINT_ORDER`` wins (hat over hair over ... over skin, the official merging order).
* Split: the official one. Each CelebA-HQ id is mapped to its CelebA file through
  ``CelebA-HQ-to-CelebA-mapping.txt`` and takes that file's train/val/test partition from
  ``list_eval_partition.txt`` (24183 / 2993 / 2824 images for the full release).
* Problems (missing image, unreadable or wrongly sized mask, id absent from the mapping or the
  partition, ...) are reported by file name at the end and in the report; the id is skipped, the
  rest is converted. Every output file is written atomically (temporary file, then rename), so an
  interrupted run leaves no truncated image behind; re-running overwrites.
* Exit status: 0 when at least one image was converted, 1 otherwise; 2 for a usage error.

The arguments are parsed before numpy, PIL or the label definitions (``segmentation``, hence
mmseg and ``common``) are imported; the functions import what they use.
"""
import io
import multiprocessing
import os
import os.path as osp
import re
import sys
from collections import OrderedDict, defaultdict

_REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)
_TOOLS_DIR = osp.join(_REPO_ROOT, 'tools')
if _TOOLS_DIR not in sys.path:
    sys.path.append(_TOOLS_DIR)  # appended: tools/test.py must not shadow anything
import _cli  # noqa: E402

PROG = 'tools/dataset_converters/celebamask_hq.py'

IMG_DIR = 'CelebA-HQ-img'
MASK_DIR = 'CelebAMask-HQ-mask-anno'
MAPPING_FILE = 'CelebA-HQ-to-CelebA-mapping.txt'
PARTITION_FILE = 'list_eval_partition.txt'
SPLITS = {0: 'train', 1: 'val', 2: 'test'}
MASK_NAME = re.compile(r'^(\d+)_([a-z_]+)\.png$')
JPEG_QUALITY = 95

# Problem kinds, in the order the summary lists them.
PROBLEM_KINDS = OrderedDict([
    ('missing_image', 'image missing'),
    ('bad_image', 'image unreadable'),
    ('no_masks', 'no part mask'),
    ('bad_mask', 'mask unreadable'),
    ('mask_size', 'mask of the wrong size'),
    ('duplicate_mask', 'part mask found twice'),
    ('unknown_mask', 'mask file with an unknown name'),
    ('not_in_mapping', f'id missing in {MAPPING_FILE}'),
    ('not_in_partition', f'CelebA file missing in {PARTITION_FILE}'),
    ('bad_line', 'malformed line'),
])


class FatalError(RuntimeError):
    """The release is unusable as a whole (a required list file is missing)."""


class MaskSizeError(ValueError):
    """A part mask is readable but not ``size x size``."""


def _stem_number(name):
    """``'000123.jpg'`` -> 123 (CelebA file names are compared by number, not by padding)."""
    return int(osp.splitext(osp.basename(name))[0])


def read_mapping(path, problems):
    """CelebA-HQ id -> CelebA file number, from ``idx orig_idx orig_file`` lines."""
    if not osp.isfile(path):
        raise FatalError(f'{path} not found: the CelebA-HQ -> CelebA mapping is needed to find '
                         'the official split (it ships with CelebAMask-HQ).')
    mapping = {}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            cols = line.split()
            if not cols or (lineno == 1 and not cols[0].isdigit()):
                continue  # blank line or the header
            try:
                mapping[int(cols[0])] = _stem_number(cols[2])
            except (IndexError, ValueError):
                problems['bad_line'].append(f'{MAPPING_FILE}:{lineno}: {line.strip()!r}')
    return mapping


def read_partition(path, problems):
    """CelebA file number -> split name, from ``<file> <0|1|2>`` lines."""
    if not osp.isfile(path):
        raise FatalError(f'{path} not found: copy list_eval_partition.txt from CelebA '
                         '(Eval/list_eval_partition.txt) next to the CelebAMask-HQ folders.')
    partition = {}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            cols = line.split()
            if not cols:
                continue
            try:
                partition[_stem_number(cols[0])] = SPLITS[int(cols[1])]
            except (IndexError, ValueError, KeyError):
                problems['bad_line'].append(f'{PARTITION_FILE}:{lineno}: {line.strip()!r}')
    return partition


def index_images(img_dir):
    """CelebA-HQ id -> image path."""
    images = {}
    if osp.isdir(img_dir):
        for entry in os.scandir(img_dir):
            stem, ext = osp.splitext(entry.name)
            if ext.lower() == '.jpg' and stem.isdigit():
                images[int(stem)] = entry.path
    return images


def index_masks(mask_dir, problems):
    """CelebA-HQ id -> {part: mask path}, over all numbered sub-folders."""
    from segmentation.datasets.celebamask_hq import PARTS
    masks = defaultdict(dict)
    duplicates = set()
    if not osp.isdir(mask_dir):
        return masks, duplicates
    for folder in sorted(os.scandir(mask_dir), key=lambda e: e.name):
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder.path):
            if not entry.name.endswith('.png'):
                continue
            rel = f'{MASK_DIR}/{folder.name}/{entry.name}'
            match = MASK_NAME.match(entry.name)
            if not match or match.group(2) not in PARTS:
                problems['unknown_mask'].append(rel)
                continue
            idx, part = int(match.group(1)), match.group(2)
            if part in masks[idx]:
                problems['duplicate_mask'].append(rel)
                duplicates.add(idx)
            masks[idx][part] = entry.path
    return masks, duplicates


def plan(src, problems):
    """The conversion tasks ``(id, split, image path, {part: mask path})`` of the release."""
    mapping = read_mapping(osp.join(src, MAPPING_FILE), problems)
    partition = read_partition(osp.join(src, PARTITION_FILE), problems)
    images = index_images(osp.join(src, IMG_DIR))
    masks, duplicates = index_masks(osp.join(src, MASK_DIR), problems)
    tasks = []
    for idx in sorted(set(images) | set(masks) | set(mapping)):
        img_name = f'{IMG_DIR}/{idx}.jpg'
        if idx not in mapping:
            problems['not_in_mapping'].append(f'id {idx} ({img_name})')
            continue
        split = partition.get(mapping[idx])
        if split is None:
            problems['not_in_partition'].append(f'id {idx} -> CelebA {mapping[idx]:06d}.jpg')
            continue
        if idx not in images:
            problems['missing_image'].append(img_name)
            continue
        if idx not in masks:
            problems['no_masks'].append(f'id {idx} ({MASK_DIR}/{idx // 2000}/{idx:05d}_*.png)')
            continue
        if idx in duplicates:
            continue  # already reported by name
        tasks.append((idx, split, images[idx], dict(masks[idx])))
    return tasks


def _rel(path, src):
    return osp.relpath(path, src).replace(os.sep, '/')


def read_mask(path, size):
    """Boolean part mask; raises :class:`MaskSizeError`, or PIL's error when unreadable."""
    import numpy as np
    from PIL import Image
    with Image.open(path) as img:
        img.load()
        if img.size != (size, size):
            raise MaskSizeError(f'{img.size[0]}x{img.size[1]}, expected {size}x{size}')
        if img.mode in ('1', 'L', 'I', 'I;16', 'F'):
            return np.asarray(img) != 0
        rgb = np.asarray(img.convert('RGB'))
        return (rgb[..., 0] != 0) | (rgb[..., 1] != 0) | (rgb[..., 2] != 0)


def build_label(part_paths, size):
    """Paint the part masks in ``PAINT_ORDER`` into a ``size x size`` uint8 label map."""
    import numpy as np

    from segmentation.datasets.celebamask_hq import PAINT_ORDER, class_index
    label = np.zeros((size, size), dtype=np.uint8)
    for part in PAINT_ORDER:
        if part in part_paths:
            label[read_mask(part_paths[part], size)] = class_index(part)
    return label


def encode_image(path, size):
    """JPEG bytes of the image at ``size x size`` (the original bytes when already that size)."""
    from PIL import Image
    with Image.open(path) as img:
        img.load()
        if img.size == (size, size) and img.format == 'JPEG' and img.mode == 'RGB':
            with open(path, 'rb') as f:
                return f.read()
        img = img.convert('RGB')
        if img.size != (size, size):
            img = img.resize((size, size), Image.LANCZOS)
        buf = io.BytesIO()
        img.save(buf, format='JPEG', quality=JPEG_QUALITY)
        return buf.getvalue()


def encode_label(label):
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(label).save(buf, format='PNG')  # 2-D uint8 -> 8-bit grayscale PNG
    return buf.getvalue()


def _describe(err, path):
    """``'ErrorType: message'`` without the (already reported) file path in the message."""
    msg = str(err).replace(repr(path), 'file').replace(path, 'file')
    return f'{type(err).__name__}: {msg}' if msg else type(err).__name__


def convert_one(task, src, out, size):
    """Convert one id. Returns ``(id, split, [(problem kind, name), ...])``."""
    from common.io import atomic_write_bytes
    from segmentation.datasets.celebamask_hq import PAINT_ORDER
    idx, split, img_path, part_paths = task
    found = []
    label = None
    try:
        label = build_label(part_paths, size)
    except Exception:  # find every bad mask of this id, not only the first one
        for part in PAINT_ORDER:
            if part not in part_paths:
                continue
            try:
                read_mask(part_paths[part], size)
            except MaskSizeError as err:
                found.append(('mask_size', f'{_rel(part_paths[part], src)} ({err})'))
            except Exception as err:
                found.append(('bad_mask', f'{_rel(part_paths[part], src)} '
                                          f'({_describe(err, part_paths[part])})'))
    try:
        img_bytes = encode_image(img_path, size)
    except Exception as err:
        found.append(('bad_image', f'{_rel(img_path, src)} ({_describe(err, img_path)})'))
    if found:
        return idx, split, found
    atomic_write_bytes(osp.join(out, 'ann_dir', split, f'{idx}.png'), encode_label(label))
    atomic_write_bytes(osp.join(out, 'img_dir', split, f'{idx}.jpg'), img_bytes)
    return idx, split, []


class _Converter:
    """Picklable ``convert_one`` with its fixed arguments, for the worker pool."""

    def __init__(self, src, out, size):
        self.src, self.out, self.size = src, out, size

    def __call__(self, task):
        return convert_one(task, self.src, self.out, self.size)


def convert(src, out, workers=1, size=512, progress=True):
    """Convert the release at ``src`` into ``out``.

    Returns ``(counts, problems)``: images converted per split, and ``{kind: [names]}``.
    Raises :class:`FatalError` when the mapping or partition list is missing.
    """
    from tqdm import tqdm
    problems = defaultdict(list)
    tasks = plan(src, problems)
    counts = OrderedDict((split, 0) for split in SPLITS.values())
    worker = _Converter(src, out, size)
    bar = tqdm(total=len(tasks), desc='CelebAMask-HQ', unit='img', disable=not progress)
    if workers > 1 and len(tasks) > 1:
        with multiprocessing.Pool(min(workers, len(tasks))) as pool:
            results = list(_track(pool.imap_unordered(worker, tasks, chunksize=8), bar))
    else:
        results = list(_track(map(worker, tasks), bar))
    bar.close()
    for idx, split, found in results:
        if found:
            for kind, name in found:
                problems[kind].append(name)
        else:
            counts[split] += 1
    for names in problems.values():
        names.sort()
    return counts, problems


def _track(iterable, bar):
    for item in iterable:
        bar.update(1)
        yield item


def format_summary(counts, problems, out, limit=None):
    lines = [f'Converted {sum(counts.values())} images into {out}: ' +
             ', '.join(f'{split} {n}' for split, n in counts.items())]
    total = sum(len(v) for v in problems.values())
    if total:
        lines.append(f'{total} problem(s); these files/ids were skipped:')
    for kind, title in PROBLEM_KINDS.items():
        names = problems.get(kind, [])
        if not names:
            continue
        lines.append(f'  {title} ({len(names)}):')
        shown = names if limit is None else names[:limit]
        lines += [f'    {name}' for name in shown]
        if len(shown) < len(names):
            lines.append(f'    ... and {len(names) - len(shown)} more (see conversion_report.txt)')
    return '\n'.join(lines)


def parse_args(argv=None):
    parser = _cli.ArgumentParser(
        prog=PROG, description='Convert CelebAMask-HQ into img_dir/ann_dir with 19 classes and '
        'the official CelebA train/val/test split.')
    parser.add_argument('src', help='folder with CelebA-HQ-img/, CelebAMask-HQ-mask-anno/, '
                        f'{MAPPING_FILE} and {PARTITION_FILE}')
    parser.add_argument('out', help='output folder (e.g. data/celebamask_hq)')
    parser.add_argument('--workers', type=int, default=min(8, os.cpu_count() or 1),
                        help='worker processes (default: min(8, CPUs))')
    parser.add_argument('--size', type=int, default=512,
                        help='side of the masks in the release and of the written images and '
                        'labels (default: 512, the release mask size)')
    parser.add_argument('--no-progress', action='store_true', help='hide the progress bar')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        counts, problems = convert(args.src, args.out, workers=args.workers, size=args.size,
                                   progress=not args.no_progress)
    except FatalError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    converted = sum(counts.values())
    if converted or any(problems.values()):
        from common.io import atomic_write_bytes
        report = format_summary(counts, problems, args.out)
        atomic_write_bytes(osp.join(args.out, 'conversion_report.txt'),
                           (report + '\n').encode())
    print(format_summary(counts, problems, args.out, limit=20))
    if not converted:
        print('error: nothing could be converted; see the problems above.', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
