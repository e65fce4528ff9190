"""Convert the official WFLW release into mmpose COCO-style annotation files.

Usage::

    python tools/dataset_converters/wflw.py WFLW_ROOT OUT_DIR

``WFLW_ROOT`` holds the release as published on https://wywu.github.io/projects/LAB/WFLW.html::

    WFLW_ROOT/WFLW_images/<event>/<name>.jpg
    WFLW_ROOT/WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_train.txt
    WFLW_ROOT/WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_test.txt

One line per face, separated by white space: 196 floats (the 98 landmarks as x y pairs), 4 ints (the
face rectangle x_min y_min x_max y_max), 6 attribute flags (pose, expression, illumination, make-up,
occlusion, blur) and the image path relative to ``WFLW_images/``.

Written to ``OUT_DIR``: ``face_landmarks_wflw_train.json``, ``face_landmarks_wflw_test.json`` and
one test file per attribute subset, ``face_landmarks_wflw_test_{largepose,expression,illumination,
makeup,occlusion,blur}.json`` (the faces whose flag is 1, with their annotation and image ids
unchanged). Each annotation keeps its six flags under ``attributes`` (named as the subset files),
which is what lets ``WFLWNMEMetric`` report every subset in one evaluation of the full test file.

Malformed lines and missing or unreadable images are reported with their line number and skipped;
the rest is converted (``--strict`` turns any such problem into a failure that writes nothing).
Every file is written atomically.
"""
import json
import math
import os.path as osp
import sys

_TOOLS_DIR = osp.dirname(osp.dirname(osp.abspath(__file__)))
if _TOOLS_DIR not in sys.path:
    sys.path.append(_TOOLS_DIR)  # appended: tools/test.py must not shadow anything
import _cli  # noqa: E402

PROG = 'tools/dataset_converters/wflw.py'
NUM_KEYPOINTS = 98
# The order of the six flags on an annotation line, named as the subset files are.
ATTRIBUTES = ('largepose', 'expression', 'illumination', 'makeup', 'occlusion', 'blur')
NUM_FIELDS = 2 * NUM_KEYPOINTS + 4 + len(ATTRIBUTES) + 1
SPLITS = ('train', 'test')
LIST_DIR = osp.join('WFLW_annotations', 'list_98pt_rect_attr_train_test')
IMAGE_DIR = 'WFLW_images'
# mmpose's stock WFLWDataset reads a box as center + scale in units of 200 pixels.
PIXEL_STD = 200.0


class MalformedLineError(ValueError):
    """An annotation line that does not follow the official format."""


def list_file(wflw_root, split):
    return osp.join(wflw_root, LIST_DIR, f'list_98pt_rect_attr_{split}.txt')


def output_name(split, subset=None):
    return f'face_landmarks_wflw_{split}' + (f'_{subset}' if subset else '') + '.json'


def _finite_float(text, what):
    try:
        value = float(text)
    except ValueError:
        raise MalformedLineError(f'{what} is not a number: {text!r}') from None
    if not math.isfinite(value):
        raise MalformedLineError(f'{what} is not finite: {text!r}')
    return value


def parse_line(line):
    """Parse one annotation line into ``dict(keypoints, box, attributes, image)``.

    ``keypoints`` is a list of 98 ``(x, y)``, ``box`` is ``(x_min, y_min, x_max, y_max)``,
    ``attributes`` maps each name of :data:`ATTRIBUTES` to 0 or 1, ``image`` is the path relative
    to ``WFLW_images/``. Raises :class:`MalformedLineError` saying what is wrong.
    """
    fields = line.split()
    if len(fields) != NUM_FIELDS:
        raise MalformedLineError(f'expected {NUM_FIELDS} fields (196 coordinates, 4 box values, '
                                 f'6 attribute flags, 1 image path), got {len(fields)}')
    coords = [_finite_float(v, f'coordinate {i + 1}')
              for i, v in enumerate(fields[:2 * NUM_KEYPOINTS])]
    keypoints = list(zip(coords[0::2], coords[1::2]))
    names = ('x_min', 'y_min', 'x_max', 'y_max')
    box = tuple(_finite_float(v, f'box {name}')
                for name, v in zip(names, fields[2 * NUM_KEYPOINTS:2 * NUM_KEYPOINTS + 4]))
    if box[2] <= box[0] or box[3] <= box[1]:
        raise MalformedLineError(f'empty face box {box} (x_max <= x_min or y_max <= y_min)')
    flags = fields[2 * NUM_KEYPOINTS + 4:-1]
    attributes = {}
    for name, flag in zip(ATTRIBUTES, flags):
        if flag not in ('0', '1'):
            raise MalformedLineError(f'attribute flag {name} must be 0 or 1, got {flag!r}')
        attributes[name] = int(flag)
    return dict(keypoints=keypoints, box=box, attributes=attributes, image=fields[-1])


def read_image_size(path):
    """``(width, height)`` from the image header; OSError when missing or unreadable."""
    from PIL import Image
    with Image.open(path) as img:
        return img.size


def make_annotation(face, ann_id, image_id):
    x_min, y_min, x_max, y_max = face['box']
    w, h = x_max - x_min, y_max - y_min
    keypoints = []
    for x, y in face['keypoints']:
        keypoints += [x, y, 2]
    return dict(
        id=ann_id,
        image_id=image_id,
        category_id=1,
        keypoints=keypoints,
        num_keypoints=NUM_KEYPOINTS,
        bbox=[x_min, y_min, w, h],
        area=w * h,
        iscrowd=0,
        # the same box as mmpose's WFLWDataset wants it, so that dataset reads these files too
        center=[(x_min + x_max) / 2, (y_min + y_max) / 2],
        scale=max(w, h) / PIXEL_STD,
        attributes=dict(face['attributes']))


def categories():
    return [dict(id=1, name='face', supercategory='face',
                 keypoints=[f'kpt-{i}' for i in range(NUM_KEYPOINTS)], skeleton=[])]


def convert_list(list_path, image_root, progress=True):
    """Convert one official list file. Returns ``(coco_dict, problems)``.

    ``problems`` holds one message per skipped line (``file:line: reason``).
    """
    name = osp.basename(list_path)
    with open(list_path, encoding='utf-8') as f:
        lines = f.read().splitlines()
    images, annotations, problems = {}, [], []
    bad_images = {}  # image path -> reason, so that a missing image is read once
    iterator = enumerate(lines, start=1)
    if progress:
        from tqdm import tqdm
        iterator = tqdm(iterator, total=len(lines), desc=name, unit='face', file=sys.stderr)
    for lineno, line in iterator:
        if not line.strip():
            continue
        try:
            face = parse_line(line)
        except MalformedLineError as err:
            problems.append(f'{name}:{lineno}: malformed line: {err}')
            continue
        image = face['image']
        if image not in images and image not in bad_images:
            try:
                width, height = read_image_size(osp.join(image_root, image))
            except FileNotFoundError:
                bad_images[image] = 'missing image'
            except OSError as err:
                bad_images[image] = f'unreadable image ({err})'
            else:
                images[image] = dict(id=len(images) + 1, file_name=image, width=width,
                                     height=height)
        if image in bad_images:
            problems.append(f'{name}:{lineno}: {bad_images[image]} {image!r} '
                            f'(looked for {osp.join(image_root, image)})')
            continue
        annotations.append(make_annotation(face, len(annotations) + 1, images[image]['id']))
    coco = dict(
        info=dict(description=f'WFLW 98-point landmarks converted from {name} by '
                  'tools/dataset_converters/wflw.py'),
        images=list(images.values()),
        annotations=annotations,
        categories=categories())
    return coco, problems


def attribute_subset(coco, attribute):
    """The faces of ``coco`` whose ``attribute`` flag is 1, with only the images they are in."""
    annotations = [a for a in coco['annotations'] if a['attributes'][attribute] == 1]
    image_ids = {a['image_id'] for a in annotations}
    info = dict(coco['info'], description=coco['info']['description'] + f'; {attribute} subset')
    return dict(info=info, images=[im for im in coco['images'] if im['id'] in image_ids],
                annotations=annotations, categories=coco['categories'])


def write_json(path, obj):
    from common.io import atomic_path
    with atomic_path(path) as tmp:
        with open(tmp, 'w', encoding='utf-8') as f:
            json.dump(obj, f)


def convert(wflw_root, out_dir, splits=SPLITS, progress=True, strict=False, log=print):
    """Convert ``splits`` of the release at ``wflw_root`` into ``out_dir``.

    Returns ``dict(written=[paths], problems=[messages])``. Raises FileNotFoundError when a list
    file or the image folder is missing, and ValueError when ``strict`` and a line was skipped, or
    when a split has no convertible face at all (nothing is written in both cases).
    """
    image_root = osp.join(wflw_root, IMAGE_DIR)
    if not osp.isdir(image_root):
        raise FileNotFoundError(f'No image folder {image_root!r}: WFLW_ROOT must hold the '
                                f'official {IMAGE_DIR}/ and {LIST_DIR}/ folders.')
    outputs, problems = {}, []
    for split in splits:
        path = list_file(wflw_root, split)
        if not osp.isfile(path):
            raise FileNotFoundError(f'No annotation list {path!r}: WFLW_ROOT must hold the '
                                    f'official {LIST_DIR}/ folder.')
        coco, split_problems = convert_list(path, image_root, progress=progress)
        for message in split_problems:
            log(f'WARNING {message}')
        problems += split_problems
        if not coco['annotations']:
            raise ValueError(f'No face of {path!r} could be converted ({len(split_problems)} '
                             'lines skipped); nothing written.')
        log(f'{split}: {len(coco["annotations"])} faces in {len(coco["images"])} images, '
            f'{len(split_problems)} lines skipped')
        outputs[output_name(split)] = coco
        if split == 'test':
            for attribute in ATTRIBUTES:
                subset = attribute_subset(coco, attribute)
                if not subset['annotations']:
                    log(f'WARNING test subset {attribute!r} is empty')
                outputs[output_name(split, attribute)] = subset
    if strict and problems:
        raise ValueError(f'{len(problems)} lines could not be converted (--strict); nothing '
                         'written. First: ' + problems[0])
    written = []
    for name, coco in outputs.items():
        path = osp.join(out_dir, name)
        write_json(path, coco)
        written.append(path)
    log(f'wrote {len(written)} files to {out_dir}')
    return dict(written=written, problems=problems)


def parse_args(argv=None):
    parser = _cli.ArgumentParser(
        prog=PROG,
        description='Convert the official WFLW annotations into mmpose COCO-style json files.')
    parser.add_argument('wflw_root', help='folder holding WFLW_images/ and WFLW_annotations/')
    parser.add_argument('out_dir', help='where the json files are written')
    parser.add_argument('--splits', nargs='+', choices=SPLITS, default=list(SPLITS))
    parser.add_argument('--strict', action='store_true',
                        help='fail, writing nothing, if any line is malformed or image missing')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        convert(args.wflw_root, args.out_dir, splits=args.splits, progress=not args.no_progress,
                strict=args.strict, log=lambda msg: print(msg, file=sys.stderr))
    except (FileNotFoundError, ValueError) as err:
        print(f'ERROR {err}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
