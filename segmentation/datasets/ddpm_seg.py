"""Readers of the ddpm-segmentation release (few labelled images per dataset, ``.npy`` masks).

The release (``datasets.tar.gz`` of yandex-research/ddpm-segmentation, extracted as
``<root>/<name>/real/{train,test}/``) holds images (png/jpg/jpeg/gif, possibly in sub-folders)
and, next to each, a mask with the same path and the extension ``.npy`` (class ids, one per
pixel). :data:`DDPM_SEG_DATASETS` lists the six datasets of the paper (plus the digits demo's
``digits_11``, written by :mod:`segmentation.datasets.digits_seg`) with their class names,
ignore label, train/test counts and palettes.

The one rule: a split is the FIRST ``number`` images of the recursively listed, sorted image paths
(``number`` defaults to the count of the reference's experiment config), each image resized to
``image_size`` with bilinear filtering exactly as torchvision's ``Resize`` does on a PIL image and
each mask with nearest-neighbour exactly as OpenCV's ``INTER_NEAREST`` does; the "fewer than 20
pixels -> ignore" rule (:func:`drop_small_classes`) applies to training masks only. Anything that
does not fit (no mask, a non-square image, a class id out of range) is a
:class:`DDPMSegDataError` naming the file, what was expected and the fix.

Two entry points: :func:`load_ddpm_seg_split` (arrays in memory, for feature extraction and the
pixel classifiers) and the mmseg dataset :class:`DDPMSegDataset` with the transform
:class:`LoadNpyAnnotations` (for ``tools/test.py``).
"""
import difflib
import os
import os.path as osp
import sys
from typing import NamedTuple, Optional, Tuple

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS, TRANSFORMS

#: Image extensions the reference lists (compared case-insensitively).
IMAGE_EXTENSIONS = ('png', 'jpg', 'jpeg', 'gif')
SPLITS = ('train', 'test')
#: A class with fewer pixels than this in a training mask is relabelled ``ignore_label``.
MIN_CLASS_PIXELS = 20


class DDPMSegDataError(ValueError):
    """A release file or folder is missing or malformed; the message is one paragraph with the
    fix."""


class DDPMSegInfo(NamedTuple):
    """What one dataset of the release is: classes (index = label id), ignore label, counts."""
    classes: Tuple[str, ...]
    palette: Tuple[Tuple[int, int, int], ...]
    ignore_label: int
    num_train: int  # the reference config's ``training_number``
    num_test: int  # the reference config's ``testing_number``
    checkpoint: Optional[str]  # the guided-diffusion checkpoint the reference uses (None: none)

    @property
    def number_class(self):
        """Label ids are ``0 .. number_class - 1`` (plus ``ignore_label`` when it is 255)."""
        return len(self.classes)

    def count(self, split):
        return self.num_train if split == 'train' else self.num_test


# Class names and palettes: verified against the reference's src/data_util.py (class lists, and
# palettes given there as flat RGB lists; FFHQ's as floats in 0..1, converted with int(x * 255)
# as the reference does). ADE-Bedroom-30 is the first 30 classes (and colours) of its ADE
# bedroom-50 list. Counts, ignore labels and number_class: the reference's experiments/*/ddpm.json.

_BEDROOM_28 = (
    'background', 'bed', 'bed***footboard', 'bed***headboard', 'bed***side rail', 'carpet',
    'ceiling', 'chandelier / ceiling fan blade', 'curtain', 'cushion', 'floor',
    'table/nightstand/dresser', 'table/nightstand/dresser***top', 'picture / mirrow', 'pillow',
    'lamp***column', 'lamp***shade', 'wall', 'window', 'curtain rod', 'window***frame', 'chair',
    'picture / mirror***frame', 'plinth', 'door / door frame', 'pouf', 'wardrobe', 'plant',
    'table staff')
_BEDROOM_28_PALETTE = (
    (255, 255, 255), (238, 229, 102), (255, 72, 69), (124, 99, 34), (193, 127, 15),
    (106, 177, 21), (248, 213, 43), (252, 155, 83), (220, 147, 77), (99, 83, 3),
    (116, 116, 138), (63, 182, 24), (200, 226, 37), (225, 184, 161), (233, 5, 219),
    (142, 172, 248), (153, 112, 146), (38, 112, 254), (229, 30, 141), (99, 205, 255),
    (74, 59, 83), (186, 9, 0), (107, 121, 0), (0, 194, 160), (255, 170, 146),
    (255, 144, 201), (185, 3, 170), (221, 239, 255), (0, 0, 53))

_FFHQ_34 = ('background', 'head') + tuple('head***' + part for part in (
    'cheek', 'chin', 'ear', 'ear***helix', 'ear***lobule', 'eye***bottom lid',
    'eye***eyelashes', 'eye***iris', 'eye***pupil', 'eye***sclera', 'eye***tear duct',
    'eye***top lid', 'eyebrow', 'forehead', 'frown', 'hair', 'hair***sideburns', 'jaw',
    'moustache', 'mouth***inferior lip', 'mouth***oral commissure', 'mouth***superior lip',
    'mouth***teeth', 'neck', 'nose', 'nose***ala of nose', 'nose***bridge', 'nose***nose tip',
    'nose***nostril', 'philtrum', 'temple', 'wrinkles'))
_FFHQ_34_PALETTE = (
    (255, 255, 255), (112, 130, 107), (218, 243, 81), (61, 119, 252), (215, 237, 192),
    (95, 201, 83), (4, 126, 96), (190, 3, 144), (41, 61, 186), (5, 111, 104),
    (149, 226, 156), (203, 232, 247), (173, 159, 218), (254, 119, 98), (136, 210, 69),
    (44, 92, 212), (135, 170, 125), (54, 88, 120), (174, 31, 37), (98, 118, 25),
    (58, 10, 77), (146, 139, 250), (33, 245, 19), (72, 47, 66), (248, 240, 169),
    (99, 113, 164), (221, 100, 24), (155, 247, 6), (93, 170, 79), (164, 186, 243),
    (157, 27, 230), (86, 126, 185), (42, 235, 167), (240, 171, 157))

_CAT_15 = ('background', 'back', 'belly', 'chest', 'leg', 'paw', 'head', 'ear', 'eye', 'mouth',
           'tongue', 'nose', 'tail', 'whiskers', 'neck')
_CAT_15_PALETTE = (
    (255, 255, 255), (190, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35),
    (102, 102, 156), (152, 251, 152), (119, 11, 32), (244, 35, 232), (220, 20, 60),
    (52, 83, 84), (194, 87, 125), (143, 176, 255), (31, 102, 211), (104, 131, 101))

_HORSE_21 = ('background', 'person', 'back', 'barrel', 'bridle', 'chest', 'ear', 'eye',
             'forelock', 'head', 'hoof', 'leg', 'mane', 'muzzle', 'neck', 'nostril', 'tail',
             'thigh', 'saddle', 'shoulder', 'leg protection')
_HORSE_21_PALETTE = (
    (255, 255, 255), (255, 74, 70), (0, 137, 65), (0, 111, 166), (163, 0, 89),
    (255, 219, 229), (122, 73, 0), (0, 0, 166), (99, 255, 172), (183, 151, 98),
    (0, 77, 67), (143, 176, 255), (241, 38, 110), (27, 210, 105), (128, 150, 147),
    (228, 230, 158), (160, 136, 106), (79, 198, 1), (59, 93, 255), (115, 214, 209),
    (255, 47, 128))

# CelebA-19 of the release orders its classes alphabetically (unlike CelebAMask-HQ's usual order
# in segmentation/datasets/celebamask_hq.py): the ids of the two are NOT interchangeable.
_CELEBA_19 = ('background', 'cloth', 'ear_r', 'eye_g', 'hair', 'hat', 'l_brow', 'l_ear', 'l_eye',
              'l_lip', 'mouth', 'neck', 'neck_l', 'nose', 'r_brow', 'r_ear', 'r_eye', 'skin',
              'u_lip')
_CELEBA_19_PALETTE = (
    (255, 255, 255), (238, 229, 102), (250, 150, 50), (124, 99, 34), (193, 127, 15),
    (225, 96, 18), (220, 147, 77), (99, 83, 3), (116, 116, 138), (200, 226, 37),
    (225, 184, 161), (142, 172, 248), (153, 112, 146), (38, 112, 254), (229, 30, 141),
    (52, 83, 84), (194, 87, 125), (248, 213, 42), (31, 102, 211))

# 'windowpane' and the other names are ADE20K's; no background class (id 0 is 'wall').
_ADE_BEDROOM_30 = ('wall', 'bed', 'floor', 'table', 'lamp', 'ceiling', 'painting', 'windowpane',
                   'pillow', 'curtain', 'cushion', 'door', 'chair', 'cabinet', 'chest', 'mirror',
                   'rug', 'armchair', 'book', 'sconce', 'plant', 'wardrobe', 'clock', 'light',
                   'flower', 'vase', 'fan', 'box', 'shelf', 'television')
_ADE_BEDROOM_30_PALETTE = (
    (240, 156, 206), (69, 88, 93), (240, 49, 184), (27, 107, 126), (50, 82, 241),
    (54, 250, 147), (156, 213, 3), (176, 108, 79), (251, 150, 149), (66, 51, 34),
    (210, 97, 53), (30, 53, 102), (232, 164, 118), (204, 150, 17), (101, 86, 178),
    (249, 20, 213), (54, 35, 82), (157, 68, 216), (58, 161, 73), (174, 67, 67),
    (193, 181, 78), (169, 60, 178), (220, 204, 166), (4, 127, 85), (245, 106, 216),
    (222, 172, 168), (84, 148, 105), (137, 220, 89), (68, 252, 126), (29, 193, 187))

# The digits demo (segmentation/datasets/digits_seg.py): background + the ten digits; black
# background and matplotlib's 'tab10' colours for the digits.
_DIGITS_11 = ('background', ) + tuple(str(d) for d in range(10))
_DIGITS_11_PALETTE = (
    (0, 0, 0), (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))

#: name -> :class:`DDPMSegInfo`. ``bedroom_28`` ignores label 0 (its background): 28 classes are
#: evaluated out of ``number_class`` = 29; every other dataset ignores 255 and evaluates class 0.
DDPM_SEG_DATASETS = {
    'bedroom_28': DDPMSegInfo(_BEDROOM_28, _BEDROOM_28_PALETTE, 0, 40, 20, 'lsun_bedroom'),
    'ffhq_34': DDPMSegInfo(_FFHQ_34, _FFHQ_34_PALETTE, 255, 20, 20, 'ffhq'),
    'cat_15': DDPMSegInfo(_CAT_15, _CAT_15_PALETTE, 255, 30, 20, 'lsun_cat'),
    'horse_21': DDPMSegInfo(_HORSE_21, _HORSE_21_PALETTE, 255, 30, 30, 'lsun_horse'),
    'celeba_19': DDPMSegInfo(_CELEBA_19, _CELEBA_19_PALETTE, 255, 20, 500, 'ffhq'),
    'ade_bedroom_30': DDPMSegInfo(_ADE_BEDROOM_30, _ADE_BEDROOM_30_PALETTE, 255, 50, 650,
                                  'lsun_bedroom'),
    'digits_11': DDPMSegInfo(_DIGITS_11, _DIGITS_11_PALETTE, 255, 20, 100, None),
}

for _name, _info in DDPM_SEG_DATASETS.items():
    assert len(_info.classes) == len(_info.palette) == int(_name.rsplit('_', 1)[1]) + (
        _name == 'bedroom_28'), _name


def dataset_info(name):
    """The :class:`DDPMSegInfo` of ``name``; an unknown name is a one-paragraph error."""
    try:
        return DDPM_SEG_DATASETS[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), list(DDPM_SEG_DATASETS), n=1)
        hint = f' Did you mean {close[0]!r}?' if close else ''
        raise DDPMSegDataError(
            f'Unknown ddpm-segmentation dataset {name!r}; expected one of '
            f'{sorted(DDPM_SEG_DATASETS)}.{hint} Use the folder name of the release '
            f'(datasets/<name>/real/...).') from None


def _check_split(split):
    if split not in SPLITS:
        raise DDPMSegDataError(
            f'split={split!r} is not a split of the ddpm-segmentation release; expected one of '
            f'{SPLITS} (the folders real/train and real/test).')


def split_folder(root, name, split):
    """``<root>/<name>/real/<split>`` (not checked)."""
    return osp.join(os.fspath(root), name, 'real', split)


def _list_images(folder):
    """Image files under ``folder`` (recursively), as the reference lists them: sorted full
    paths whose extension is one of :data:`IMAGE_EXTENSIONS`."""
    found = []
    for entry in sorted(os.listdir(folder)):
        path = osp.join(folder, entry)
        if '.' in entry and entry.rsplit('.', 1)[1].lower() in IMAGE_EXTENSIONS:
            found.append(path)
        elif osp.isdir(path):
            found.extend(_list_images(path))
    return sorted(found)


def list_split(root, name, split, number=None):
    """``[(image_path, mask_path), ...]``: the first ``number`` sorted images of the split.

    ``number`` defaults to the reference config's count of the split. Raises
    :class:`DDPMSegDataError` for an unknown dataset or split, a missing folder, fewer images
    than ``number`` or a selected image without its ``.npy`` mask.
    """
    info = dataset_info(name)
    _check_split(split)
    folder = split_folder(root, name, split)
    if not osp.isdir(folder):
        hint = ''
        if osp.isdir(osp.join(os.fspath(root), 'datasets', name)):
            hint = (f' {osp.join(os.fspath(root), "datasets")} holds a folder {name!r}: root '
                    f'should probably be that "datasets" folder.')
        raise DDPMSegDataError(
            f'{folder}: expected the folder of the {split} images of {name} '
            f'(<root>/{name}/real/{split}/ with images and same-stem .npy masks), but it does '
            f'not exist.{hint} Extract the release (datasets.tar.gz of ddpm-segmentation) '
            f'under root, or pass the folder that contains {name}/ as root.')
    if number is None:
        number = info.count(split)
    if isinstance(number, bool) or not isinstance(number, (int, np.integer)) or number < 1:
        raise DDPMSegDataError(
            f'number={number!r} is not a positive integer; expected how many images of '
            f'{name}/{split} to use (the first ones in sorted order; default '
            f'{info.count(split)}, the reference config\'s count).')
    images = _list_images(folder)
    if len(images) < number:
        raise DDPMSegDataError(
            f'{folder}: expected at least {number} images (png/jpg/jpeg/gif) for {name}/{split}, '
            f'found {len(images)}. Check that the release was extracted completely, or ask for '
            f'fewer images (number={len(images)}).')
    pairs = []
    for image in images[:number]:
        mask = osp.splitext(image)[0] + '.npy'
        if not osp.isfile(mask):
            raise DDPMSegDataError(
                f'{image}: expected its mask {mask} (class ids as a 2-D .npy array with the '
                f'image\'s stem), but there is none. Every image of the release comes with one; '
                f'restore the mask from the release or remove the image.')
        pairs.append((image, mask))
    return pairs


def read_image(path, image_size=None):
    """An image as RGB ``uint8 [S, S, 3]``, resized to ``image_size`` like torchvision's
    ``Resize(image_size)`` on a PIL image (PIL bilinear with its antialiasing); square only."""
    from PIL import Image
    try:
        with Image.open(path) as pil:
            pil = pil.convert('RGB')  # a gif gives its first frame
    except (OSError, ValueError) as err:
        raise DDPMSegDataError(
            f'{path}: expected an image file readable by PIL, but it cannot be read ({err}). '
            f'Replace it with the file from the release.') from None
    w, h = pil.size
    if w != h:
        raise DDPMSegDataError(
            f'{path}: expected a square image (the reference accepts only square images), got '
            f'width {w} x height {h}. Crop it to a square (and its mask alike) before using it.')
    if image_size is not None and int(image_size) != w:
        pil = pil.resize((int(image_size), int(image_size)), Image.BILINEAR)
    return np.asarray(pil, dtype=np.uint8).copy()


def resize_mask(mask, size):
    """``mask`` (2-D uint8) resized to ``size`` (int or (height, width)) with OpenCV's
    ``INTER_NEAREST``: output pixel i takes input pixel ``floor(i * in / out)``."""
    import cv2
    h, w = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    if mask.shape == (h, w):
        return mask.copy()
    return cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)


def read_mask(path, number_class, ignore_label, size=None):
    """A mask ``.npy`` (read without unpickling) as ``uint8 [H, W]`` after checking that every
    value is a class id ``0 .. number_class - 1`` or ``ignore_label``; resized nearest to
    ``size`` if given."""
    try:
        mask = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DDPMSegDataError(
            f'{path}: expected a mask saved with numpy.save (a 2-D array of class ids, no '
            f'pickled objects), but it cannot be read ({err}). Replace it with the file from '
            f'the release.') from None
    if mask.ndim != 2:
        raise DDPMSegDataError(
            f'{path}: expected a 2-D mask [height, width] of class ids, got shape '
            f'{tuple(mask.shape)}. Save one class id per pixel (e.g. mask.argmax(-1) of a one-hot '
            f'mask).')
    if mask.dtype.kind not in 'biuf' or (mask.dtype.kind == 'f' and
                                          not np.array_equal(mask, np.round(mask))):
        raise DDPMSegDataError(
            f'{path}: expected integer class ids, got dtype {mask.dtype} with non-integer '
            f'values. Save the mask as uint8 class ids.')
    values = np.unique(mask)
    bad = values[((values < 0) | (values >= number_class)) & (values != ignore_label)]
    if bad.size:
        raise DDPMSegDataError(
            f'{path}: class id(s) {[int(v) for v in bad[:8]]}{" ..." if bad.size > 8 else ""} '
            f'out of range; expected ids 0..{number_class - 1} or the ignore label '
            f'{ignore_label}. Check that the mask belongs to this dataset (number_class='
            f'{number_class}) or relabel those pixels.')
    mask = mask.astype(np.uint8)
    return mask if size is None else resize_mask(mask, size)


def drop_small_classes(mask, ignore_label, min_pixels=MIN_CLASS_PIXELS):
    """A copy of ``mask`` where every class with ``0 < pixels < min_pixels`` is ``ignore_label``.

    The reference's "delete small annotation" rule for training masks (applied after resizing
    to the feature resolution); never used on test masks. ``ignore_label`` itself is kept.
    """
    mask = np.asarray(mask)
    out = mask.copy()
    values, counts = np.unique(mask, return_counts=True)
    for value, count in zip(values, counts):
        if value != ignore_label and 0 < count < min_pixels:
            out[mask == value] = ignore_label
    return out


def _progress(iterable, desc, total=None):
    """``tqdm`` over ``iterable`` when stderr is a terminal; the bare iterable otherwise."""
    if not sys.stderr.isatty():
        return iterable
    from tqdm import tqdm
    return tqdm(iterable, desc=desc, total=total, leave=False)


def load_ddpm_seg_split(root, name, split, number=None, image_size=256, drop_small=None,
                        min_pixels=MIN_CLASS_PIXELS):
    """One split of a release as ``[dict(stem, image, mask), ...]`` (see the module docstring).

    Args:
        root (str): the folder holding ``<name>/real/{train,test}/``.
        name (str): a key of :data:`DDPM_SEG_DATASETS`.
        split (str): ``'train'`` or ``'test'``.
        number (int | None): use the first ``number`` sorted images (default: the reference
            config's count of the split).
        image_size (int | None): side of the returned images and masks (None: the images'
            own size; masks are then resized to their image's size if they differ).
        drop_small (bool | None): apply :func:`drop_small_classes`; default True for ``train``
            and False for ``test``, as the reference does.
        min_pixels (int): the threshold of :func:`drop_small_classes`.

    Returns:
        list[dict]: ``stem`` (the image's path relative to the split folder, without its
        extension), ``image`` ``uint8 [S, S, 3]`` RGB, ``mask`` ``uint8 [S, S]``.
    """
    info = dataset_info(name)
    pairs = list_split(root, name, split, number)
    if drop_small is None:
        drop_small = split == 'train'
    folder = split_folder(root, name, split)
    items = []
    for image_path, mask_path in _progress(pairs, f'{name}/{split}', total=len(pairs)):
        image = read_image(image_path, image_size)
        mask = read_mask(mask_path, info.number_class, info.ignore_label, image.shape[:2])
        if drop_small:
            mask = drop_small_classes(mask, info.ignore_label, min_pixels)
        stem = osp.splitext(osp.relpath(image_path, folder))[0].replace(os.sep, '/')
        items.append(dict(stem=stem, image=image, mask=mask))
    return items


# ------------------------------------------------------------------------------------------------
# mmseg: dataset + annotation loader, for tools/test.py
# ------------------------------------------------------------------------------------------------


@DATASETS.register_module()
class DDPMSegDataset(BaseSegDataset):
    """One split of a ddpm-segmentation release as an mmseg dataset.

    ``data_list`` holds the first ``number`` sorted images of ``<data_root>/<name>/real/<split>``
    (``img_path``) with their masks (``seg_map_path``, ``.npy``): read the masks with
    :class:`LoadNpyAnnotations`, not mmseg's ``LoadAnnotations``. Classes and palette come from
    :data:`DDPM_SEG_DATASETS`, ``ignore_index`` is the dataset's ignore label, and
    ``reduce_zero_label`` stays False (bedroom_28 ignores its background through
    ``ignore_index=0`` instead). GIF images need ``LoadImageFromFile(imdecode_backend='pillow')``.

    Args:
        name (str): a key of :data:`DDPM_SEG_DATASETS`.
        data_root (str): the folder holding ``<name>/real/``.
        split (str): ``'train'`` or ``'test'`` (default ``'test'``).
        number (int | None): the first ``number`` images (default: the reference's count).
        **kwargs: other ``BaseSegDataset`` arguments (``pipeline``, ``test_mode``, a
            ``metainfo`` with another ``palette`` ...).
    """

    def __init__(self, name, data_root, split='test', number=None, metainfo=None,
                 ignore_index=None, reduce_zero_label=False, **kwargs):
        info = dataset_info(name)
        _check_split(split)
        if reduce_zero_label:
            raise DDPMSegDataError(
                f'DDPMSegDataset {name}: reduce_zero_label=True would shift every class id down '
                f'by one and break the ids of the release\'s masks; expected False. Ignored '
                f'pixels are those equal to ignore_index ({info.ignore_label} for {name}).')
        if ignore_index is not None and ignore_index != info.ignore_label:
            raise DDPMSegDataError(
                f'DDPMSegDataset {name}: ignore_index={ignore_index} differs from the dataset\'s '
                f'ignore label {info.ignore_label}; expected it or None. Leave ignore_index out '
                f'of the config: it is taken from the dataset table.')
        meta = dict(classes=info.classes, palette=[list(c) for c in info.palette])
        for key, value in dict(metainfo or {}).items():
            if key == 'classes' and tuple(value) != info.classes:
                raise DDPMSegDataError(
                    f'DDPMSegDataset {name}: metainfo classes {list(value)} differ from the '
                    f'dataset\'s {list(info.classes)}; expected them unchanged (the class ids '
                    f'are those of the masks). Remove classes from metainfo.')
            meta[key] = value
        self.name = name
        self.split = split
        self.number = number
        self.info = info
        if not data_root:
            raise DDPMSegDataError(
                f'DDPMSegDataset {name}: data_root is empty; expected the folder that holds '
                f'{name}/real/{split}/. Set data_root in the dataset config.')
        super().__init__(data_root=osp.abspath(osp.expanduser(data_root)), metainfo=meta,
                         img_suffix='', seg_map_suffix='.npy', ignore_index=info.ignore_label,
                         reduce_zero_label=False, **kwargs)

    def load_data_list(self):
        return [
            dict(img_path=image, seg_map_path=mask, label_map=None, reduce_zero_label=False,
                 seg_fields=[], num_classes=self.info.number_class,
                 ignore_index=self.info.ignore_label)
            for image, mask in list_split(self.data_root, self.name, self.split, self.number)
        ]


@TRANSFORMS.register_module()
class LoadNpyAnnotations(BaseTransform):
    """mmseg's ``LoadAnnotations`` for ``.npy`` masks: ``seg_map_path`` -> ``gt_seg_map``.

    The mask is read without unpickling, checked (2-D, class ids below ``num_classes`` or equal
    to ``ignore_index`` when the dataset gives them) and stored as ``uint8`` in ``gt_seg_map``,
    which is appended to ``seg_fields`` so that a later ``Resize``/``RandomFlip`` transforms it
    (nearest) with the image. If the mask's size differs from the loaded image's
    (``ori_shape``, set by ``LoadImageFromFile``), it is first resized nearest to that size, as
    the reference resizes every mask to its image. ``label_map`` and ``reduce_zero_label`` in
    ``results`` are honoured as by ``LoadAnnotations``.
    """

    def transform(self, results):
        path = results['seg_map_path']
        num_classes = results.get('num_classes')
        ignore_index = results.get('ignore_index', 255)
        size = results.get('ori_shape')
        mask = read_mask(path, num_classes if num_classes is not None else 256, ignore_index,
                         None if size is None else size[:2])
        if results.get('reduce_zero_label'):
            mask = mask.copy()
            mask[mask == 0] = 255
            mask = mask - 1
            mask[mask == 254] = 255
        if results.get('label_map'):
            original = mask.copy()
            for old_id, new_id in results['label_map'].items():
                mask[original == old_id] = new_id
        results['gt_seg_map'] = mask
        results.setdefault('seg_fields', []).append('gt_seg_map')
        return results

    def __repr__(self):
        return f'{type(self).__name__}()'
