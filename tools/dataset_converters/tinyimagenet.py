"""Write mmpretrain annotation lists for the official Tiny-ImageNet-200 release.

Usage::

    python tools/dataset_converters/tinyimagenet.py ROOT \\
        [--imagenet-synsets LOC_synset_mapping.txt] [--class-names {wnid,words}]

``ROOT`` is the unpacked ``tiny-imagenet-200.zip``
(http://cs231n.stanford.edu/tiny-imagenet-200.zip), left as released::

    ROOT/wnids.txt                                 the 200 WordNet ids, one a line
    ROOT/words.txt                                 <wnid>\\t<names> for all of WordNet (optional)
    ROOT/train/<wnid>/images/<wnid>_<k>.JPEG       500 images a class
    ROOT/train/<wnid>/<wnid>_boxes.txt             <file>\\t<x0>\\t<y0>\\t<x1>\\t<y1> (optional)
    ROOT/val/images/val_<k>.JPEG                   10000 images
    ROOT/val/val_annotations.txt                   <file>\\t<wnid>\\t<x0>\\t<y0>\\t<x1>\\t<y1>
    ROOT/test/images/test_<k>.JPEG                 10000 images without labels (not listed)

Written to ``ROOT/meta/`` (each file atomically: a temporary file, then a rename)::

    classes.txt                  one class a line, in class-index order: the wnid, or with
                                 --class-names words the first name words.txt gives it
    train.txt                    train/<wnid>/images/<wnid>_<k>.JPEG <class index>
    val.txt                      val/images/val_<k>.JPEG <class index>
    imagenet_class_index.txt     with --imagenet-synsets: line i = the ImageNet-1k index of
                                 Tiny-ImageNet class i (one integer a line)

The class index of a wnid is its position in the *sorted* ``wnids.txt`` (the order of the
sorted class folders, as ``ImageFolder``-style loaders number them). Paths are relative to
``ROOT``, which the configs use as ``data_root``.

``--imagenet-synsets`` takes ImageNet-1k's ``LOC_synset_mapping.txt`` (``<wnid> <names>``, one
line per class in the standard 1000-class order, index = line number from 0). The resulting
``imagenet_class_index.txt`` is what ``FeatureDistiller(teacher_label_map=...)`` reads to give the
class-conditional guided-diffusion 64x64 teacher the ImageNet class of each image, instead of the
Tiny-ImageNet index 0..199 (which names an unrelated ImageNet class).

Problems are reported by name on stderr and skipped, the rest is converted: a wnid missing from
``wnids.txt`` (a train folder or a val annotation naming it), a missing image (listed in a
``<wnid>_boxes.txt`` or in ``val_annotations.txt`` but not on disk), a val image without an
annotation, a malformed line, a Tiny-ImageNet wnid absent from the synset file (then
``imagenet_class_index.txt`` is not written, as a partial map would feed wrong labels).

Exit status: 0 when ``train.txt`` or ``val.txt`` lists at least one image; 1 otherwise (no
``wnids.txt``, or no usable image at all), and then nothing is written.
"""
import os
import os.path as osp
import sys

_REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)
_TOOLS_DIR = osp.join(_REPO_ROOT, 'tools')
if _TOOLS_DIR not in sys.path:
    sys.path.append(_TOOLS_DIR)  # appended: tools/test.py must not shadow anything
import _cli  # noqa: E402

PROG = 'tools/dataset_converters/tinyimagenet.py'
IMAGE_EXTENSIONS = ('.jpeg', '.jpg', '.png')
NUM_IMAGENET_CLASSES = 1000
META_DIR = 'meta'
OUTPUT_FILES = dict(classes='classes.txt', train='train.txt', val='val.txt',
                    imagenet='imagenet_class_index.txt')


class ConversionError(ValueError):
    """Nothing usable could be converted; nothing was written."""


def _lines(path):
    """``(line number, stripped line)`` for every non-blank line of a text file."""
    with open(path, encoding='utf-8') as f:
        return [(n, line.strip()) for n, line in enumerate(f, start=1) if line.strip()]


def read_wnids(root, problems):
    """The sorted, de-duplicated wnids of ``ROOT/wnids.txt``; ConversionError if none."""
    path = osp.join(root, 'wnids.txt')
    if not osp.isfile(path):
        raise ConversionError(f'No {path!r}: ROOT must be the unpacked tiny-imagenet-200 folder '
                              '(wnids.txt, train/, val/).')
    seen = set()
    for lineno, line in _lines(path):
        wnid = line.split()[0]
        if wnid in seen:
            problems.append(f'wnids.txt:{lineno}: duplicate wnid {wnid}; kept once')
        seen.add(wnid)
    if not seen:
        raise ConversionError(f'{path!r} lists no wnid.')
    return sorted(seen)


def read_words(root):
    """``{wnid: names}`` from ``ROOT/words.txt`` (empty when the file is absent)."""
    path = osp.join(root, 'words.txt')
    if not osp.isfile(path):
        return {}
    words = {}
    for _, line in _lines(path):
        wnid, _, names = line.partition('\t')
        words[wnid.strip()] = names.strip()
    return words


def _images_in(folder):
    return sorted(name for name in os.listdir(folder)
                  if name.lower().endswith(IMAGE_EXTENSIONS)
                  and osp.isfile(osp.join(folder, name)))


def list_train(root, wnids, problems):
    """``[(path relative to ROOT, class index)]`` for the training images, by class then name."""
    train_dir = osp.join(root, 'train')
    if not osp.isdir(train_dir):
        problems.append('train/: missing folder; no training image listed')
        return []
    for name in sorted(os.listdir(train_dir)):
        if osp.isdir(osp.join(train_dir, name)) and name not in wnids:
            problems.append(f'train/{name}/: unknown wnid {name} (not in wnids.txt); skipped')
    samples = []
    for index, wnid in enumerate(wnids):
        image_dir = osp.join(train_dir, wnid, 'images')
        if not osp.isdir(image_dir):
            problems.append(f'train/{wnid}/images/: missing folder; class {index} ({wnid}) '
                            'has no training image')
            continue
        on_disk = _images_in(image_dir)
        boxes = osp.join(train_dir, wnid, f'{wnid}_boxes.txt')
        if osp.isfile(boxes):
            present = set(on_disk)
            for lineno, line in _lines(boxes):
                name = line.split()[0]
                if name not in present:
                    problems.append(f'train/{wnid}/{wnid}_boxes.txt:{lineno}: missing image '
                                    f'train/{wnid}/images/{name}; skipped')
        if not on_disk:
            problems.append(f'train/{wnid}/images/: no image; class {index} ({wnid}) has no '
                            'training image')
        samples += [(f'train/{wnid}/images/{name}', index) for name in on_disk]
    return samples


def list_val(root, wnids, problems):
    """``[(path relative to ROOT, class index)]`` for the val images, in annotation order."""
    ann_path = osp.join(root, 'val', 'val_annotations.txt')
    image_dir = osp.join(root, 'val', 'images')
    if not osp.isfile(ann_path):
        problems.append('val/val_annotations.txt: missing file; no val image listed')
        return []
    if not osp.isdir(image_dir):
        problems.append('val/images/: missing folder; no val image listed')
        return []
    on_disk = set(_images_in(image_dir))
    index_of = {wnid: i for i, wnid in enumerate(wnids)}
    samples, annotated = [], set()
    for lineno, line in _lines(ann_path):
        where = f'val/val_annotations.txt:{lineno}'
        fields = line.split('\t') if '\t' in line else line.split()
        if len(fields) < 2:
            problems.append(f'{where}: malformed line {line!r} (expected file, wnid, box); '
                            'skipped')
            continue
        name, wnid = fields[0].strip(), fields[1].strip()
        if name in annotated:
            problems.append(f'{where}: second annotation of val/images/{name}; skipped')
            continue
        annotated.add(name)
        if wnid not in index_of:
            problems.append(f'{where}: val/images/{name} has unknown wnid {wnid} (not in '
                            'wnids.txt); skipped')
            continue
        if name not in on_disk:
            problems.append(f'{where}: missing image val/images/{name}; skipped')
            continue
        samples.append((f'val/images/{name}', index_of[wnid]))
    for name in sorted(on_disk - annotated):
        problems.append(f'val/images/{name}: no line in val_annotations.txt; skipped')
    return samples


def imagenet_indices(synset_path, wnids, problems):
    """ImageNet-1k index of each Tiny-ImageNet class, or None when a wnid is not in the file."""
    index_of = {}
    for lineno, line in _lines(synset_path):
        wnid = line.split()[0]
        if wnid in index_of:
            problems.append(f'{osp.basename(synset_path)}:{lineno}: duplicate wnid {wnid}; '
                            f'its first line (index {index_of[wnid]}) is used')
            continue
        index_of[wnid] = len(index_of)
    if len(index_of) != NUM_IMAGENET_CLASSES:
        problems.append(f'{synset_path}: {len(index_of)} classes, expected '
                        f'{NUM_IMAGENET_CLASSES} (ImageNet-1k in its standard order); the '
                        'indices written follow this file')
    missing = [(i, wnid) for i, wnid in enumerate(wnids) if wnid not in index_of]
    for i, wnid in missing:
        problems.append(f'{osp.basename(synset_path)}: Tiny-ImageNet class {i} ({wnid}) is not '
                        'in it')
    if missing:
        problems.append(f'{META_DIR}/{OUTPUT_FILES["imagenet"]} not written: {len(missing)} '
                        'classes have no ImageNet-1k index')
        return None
    return [index_of[wnid] for wnid in wnids]


def class_names(wnids, words, mode, problems):
    if mode == 'wnid':
        return list(wnids)
    names = []
    for wnid in wnids:
        if wnid in words and words[wnid]:
            names.append(words[wnid].split(',')[0].strip())
        else:
            problems.append(f'words.txt: no name for {wnid}; classes.txt gives the wnid')
            names.append(wnid)
    return names


def write_lines(path, lines):
    from common.io import atomic_path
    with atomic_path(path) as tmp:
        with open(tmp, 'w', encoding='utf-8') as f:
            f.writelines(f'{line}\n' for line in lines)


def convert(root, imagenet_synsets=None, names='wnid', log=print):
    """Write ``ROOT/meta/*.txt``; return ``dict(written, problems, train, val, imagenet)``.

    ``train`` and ``val`` are the listed ``(path, index)`` pairs, ``imagenet`` the class map or
    None. Raises :class:`ConversionError` (writing nothing) when there is no ``wnids.txt`` or
    no usable image at all, FileNotFoundError when the synset file is missing.
    """
    if imagenet_synsets is not None and not osp.isfile(imagenet_synsets):
        raise FileNotFoundError(f'No synset file {imagenet_synsets!r} (ImageNet-1k\'s '
                                'LOC_synset_mapping.txt).')
    problems = []
    wnids = read_wnids(root, problems)
    train = list_train(root, wnids, problems)
    val = list_val(root, wnids, problems)
    if not train and not val:
        for message in problems:
            log(f'WARNING {message}')
        raise ConversionError(f'No usable image under {root!r} ({len(problems)} problems, listed '
                              'above); nothing written.')
    imagenet = None
    if imagenet_synsets is not None:
        imagenet = imagenet_indices(imagenet_synsets, wnids, problems)
    outputs = {OUTPUT_FILES['classes']: class_names(wnids, read_words(root), names, problems)}
    for split, samples in (('train', train), ('val', val)):
        if samples:
            outputs[OUTPUT_FILES[split]] = [f'{path} {index}' for path, index in samples]
        else:
            problems.append(f'{META_DIR}/{OUTPUT_FILES[split]} not written: no usable {split} '
                            'image')
    if imagenet is not None:
        outputs[OUTPUT_FILES['imagenet']] = [str(i) for i in imagenet]
    for message in problems:
        log(f'WARNING {message}')
    written = []
    for name, lines in outputs.items():
        path = osp.join(root, META_DIR, name)
        write_lines(path, lines)
        written.append(path)
    log(f'{len(wnids)} classes; train: {len(train)} images, val: {len(val)} images; '
        f'{len(problems)} problems; wrote {", ".join(sorted(outputs))} to '
        f'{osp.join(root, META_DIR)}')
    return dict(written=written, problems=problems, train=train, val=val, imagenet=imagenet)


def parse_args(argv=None):
    parser = _cli.ArgumentParser(
        prog=PROG,
        description='Write mmpretrain annotation lists (ROOT/meta/) for Tiny-ImageNet-200.')
    parser.add_argument('root', help='the unpacked tiny-imagenet-200 folder')
    parser.add_argument('--imagenet-synsets', metavar='LOC_synset_mapping.txt',
                        help="ImageNet-1k's synset list; also write imagenet_class_index.txt")
    parser.add_argument('--class-names', choices=('wnid', 'words'), default='wnid',
                        help='what classes.txt holds: the wnid, or its first name in words.txt')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        convert(args.root, imagenet_synsets=args.imagenet_synsets, names=args.class_names,
                log=lambda msg: print(msg, file=sys.stderr))
    except (ConversionError, FileNotFoundError) as err:
        print(f'ERROR {err}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
