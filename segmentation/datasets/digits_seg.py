"""The segmentation demo's few-label task, built from REAL digit images (scikit-learn's digits).

Each 8x8 digit is upsampled to a square canvas exactly as the digits DDPM teacher sees it
(:func:`common.datasets.digits.upsample_digits`, bilinear, 32 x 32 by default); every pixel whose
intensity is above ``threshold`` is foreground and labelled ``1 + digit``, every other pixel is
background ``0``: 11 classes (``'background'``, ``'0'`` .. ``'9'``), ignore label 255 (unused).

The one rule: train images come only from the train split of :mod:`common.datasets.digits` (the
images the teacher was trained on) and test images only from its held-out test split, and the
release is written in the ddpm-segmentation on-disk format (``<root>/digits_11/real/{train,test}/``
PNG + same-stem ``.npy``), so :func:`segmentation.datasets.ddpm_seg.load_ddpm_seg_split` and
``DDPMSegDataset`` read it like any other dataset of that release.
"""
import os
import os.path as osp

import numpy as np

from .ddpm_seg import DDPM_SEG_DATASETS, DDPMSegDataError

#: The dataset's name in :data:`~segmentation.datasets.ddpm_seg.DDPM_SEG_DATASETS`.
DIGITS_SEG_NAME = 'digits_11'
#: Foreground: pixel intensity (0..255, after upsampling) strictly above this.
DEFAULT_THRESHOLD = 127


def digits_seg_masks(images, labels, threshold=DEFAULT_THRESHOLD):
    """``uint8 [N, S, S]`` masks of ``uint8 [N, S, S, 3]`` grey images: ``1 + label`` where the
    intensity is above ``threshold``, 0 elsewhere."""
    images = np.asarray(images)
    labels = np.asarray(labels, dtype=np.int64)
    foreground = images[..., 0] > threshold
    return np.where(foreground, (labels + 1)[:, None, None], 0).astype(np.uint8)


def balanced_order(indices, labels, seed=0):
    """``indices`` reordered round-robin over classes (class 0, 1, .., 9, 0, 1, ..), each class's
    images in a random order drawn with ``seed``: any prefix of the result is class-balanced."""
    indices = np.asarray(indices, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(int(seed))
    per_class = [rng.permutation(indices[labels[indices] == c]) for c in np.unique(labels[indices])]
    order = []
    for k in range(max(len(p) for p in per_class)):
        order.extend(int(p[k]) for p in per_class if k < len(p))
    return np.asarray(order, dtype=np.int64)


def select_digits(split, number, seed=0, split_seed=0):
    """``number`` indices into ``load_digits()`` from the digits ``split``, in round-robin class
    order (:func:`balanced_order`): the first ``number`` files of the written split."""
    from common.datasets.digits import _load_digits, digits_split_indices
    _, labels = _load_digits()
    pool = digits_split_indices(labels, split, split_seed=split_seed)
    if isinstance(number, bool) or not isinstance(number, (int, np.integer)) or \
            not 1 <= number <= len(pool):
        raise DDPMSegDataError(
            f'num_{split}={number!r}: expected an integer from 1 to {len(pool)} (the images of '
            f'the digits {split} split). Ask for fewer images.')
    return balanced_order(pool, labels, seed)[:number]


def write_digits_seg_release(root, num_train=None, num_test=None, seed=0, image_size=32,
                             threshold=DEFAULT_THRESHOLD, split_seed=0, overwrite=True):
    """Write ``<root>/digits_11/real/{train,test}/`` (PNG images + ``.npy`` masks) atomically.

    Args:
        root (str): the release root (the folder that will hold ``digits_11/``).
        num_train (int | None): train images, from the digits train split (default: the
            table's count, 20: two of each digit).
        num_test (int | None): test images, from the held-out digits test split (default: the
            table's count, 100).
        seed (int): which images of each split (class-balanced, round-robin over digits).
        image_size (int): side of the square canvas (32: what the digits DDPM teacher sees).
        threshold (int): foreground = intensity above it (0..255).
        split_seed (int): the digits train/test split (keep 0, the teacher's).
        overwrite (bool): replace an existing ``digits_11`` folder.

    File names are ``<order:04d>_digit<d>_idx<index:04d>``, where ``order`` is the position in the
    balanced order, so the reader's "first N sorted" selection is class-balanced for every N.
    Returns the written ``<root>/digits_11`` folder.
    """
    from PIL import Image

    from common.datasets.digits import _load_digits, upsample_digits
    from common.io.atomic_folder import atomic_folder

    info = DDPM_SEG_DATASETS[DIGITS_SEG_NAME]
    counts = dict(train=info.num_train if num_train is None else num_train,
                  test=info.num_test if num_test is None else num_test)
    if not 0 <= int(threshold) < 255:
        raise DDPMSegDataError(
            f'threshold={threshold!r}: expected an intensity from 0 to 254 (foreground = pixels '
            f'above it). The default is {DEFAULT_THRESHOLD}.')
    selected = {split: select_digits(split, counts[split], seed, split_seed)
                for split in ('train', 'test')}
    images, labels = _load_digits()
    out_dir = osp.join(os.fspath(root), DIGITS_SEG_NAME)
    with atomic_folder(out_dir, overwrite=overwrite) as tmp:
        for split, indices in selected.items():
            folder = osp.join(tmp, 'real', split)
            os.makedirs(folder)
            pixels = upsample_digits(images[indices], image_size, 'bilinear')
            masks = digits_seg_masks(pixels, labels[indices], threshold)
            for order, (index, image, mask) in enumerate(zip(indices, pixels, masks)):
                stem = f'{order:04d}_digit{labels[index]}_idx{index:04d}'
                Image.fromarray(image).save(osp.join(folder, stem + '.png'))
                np.save(osp.join(folder, stem + '.npy'), mask)
    return out_dir
