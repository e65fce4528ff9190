"""scikit-learn's handwritten digits (1,797 8x8 images, 10 classes) as an mmpretrain dataset.

The images ship inside scikit-learn (``sklearn.datasets.load_digits``): nothing is downloaded.
Each 8x8 image (values 0..16) is scaled to 0..255, upsampled to ``image_size`` and repeated over
three channels, so every model of the toolkit (and every diffusion teacher) sees ordinary RGB
uint8 images, exactly as if they had been read from PNG files.

Splits are a pure function of the labels and the seeds (:func:`digits_split_indices`):

* ``split='test'``: ``test_size`` (600) held-out images, stratified by class;
* ``split='train'``: the other 1,197 images;
* ``split='train', labelled_per_class=N``: N images of each class drawn from the train split
  with ``subset_seed`` (the small labelled set for fine-tuning). For one ``subset_seed`` the
  subsets are nested: the N=5 subset is inside the N=10 subset.
"""
import functools

import numpy as np
import torch
import torch.nn.functional as F
from mmpretrain.datasets import BaseDataset
from mmpretrain.registry import DATASETS

SPLITS = ('train', 'test')
INTERPOLATIONS = ('bilinear', 'nearest')
NUM_CLASSES = 10


@functools.lru_cache(maxsize=1)
def _load_digits():
    """``(images [1797, 8, 8] float64 in 0..16, labels [1797] int64)``, loaded once."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    return digits.images, digits.target.astype(np.int64)


def _stratified_quotas(counts, total):
    """Split ``total`` over classes in proportion to ``counts`` (largest remainder, ties to the
    lower class index), so the quotas always sum to ``total``."""
    counts = np.asarray(counts, dtype=np.float64)
    exact = total * counts / counts.sum()
    quotas = np.floor(exact).astype(np.int64)
    order = sorted(range(len(counts)), key=lambda c: (-(exact[c] - quotas[c]), c))
    for c in order[:total - int(quotas.sum())]:
        quotas[c] += 1
    return quotas


def digits_split_indices(labels,
                         split='train',
                         test_size=600,
                         split_seed=0,
                         labelled_per_class=None,
                         subset_seed=0):
    """Indices (sorted, into ``labels``) of the images in one split.

    A pure function: the same arguments always give the same indices. The test split takes
    ``test_size`` images, stratified by class (per-class quotas proportional to the class sizes),
    chosen with ``split_seed``; the train split is the rest. ``labelled_per_class=N`` keeps N
    images of each class of the train split, chosen with ``subset_seed``.

    Raises:
        ValueError: unknown split, ``test_size`` out of range, ``labelled_per_class`` on the test
            split, or larger than the train images of some class.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if split not in SPLITS:
        raise ValueError(f'DigitsDataset split={split!r} is not one of {SPLITS}.')
    classes = np.unique(labels)
    if not 0 < int(test_size) < len(labels):
        raise ValueError(f'test_size={test_size} must be between 1 and {len(labels) - 1}.')
    if labelled_per_class is not None and split != 'train':
        raise ValueError(
            f'labelled_per_class={labelled_per_class} selects labelled images of the train split; '
            f'it cannot be used with split={split!r}.')

    rng = np.random.default_rng(int(split_seed))
    quotas = _stratified_quotas([np.sum(labels == c) for c in classes], int(test_size))
    train, test = [], []
    for c, quota in zip(classes, quotas):
        members = rng.permutation(np.flatnonzero(labels == c))
        test.append(members[:quota])
        train.append(members[quota:])
    if split == 'test':
        return np.sort(np.concatenate(test))
    if labelled_per_class is None:
        return np.sort(np.concatenate(train))

    n = int(labelled_per_class)
    smallest = min(len(t) for t in train)
    if n < 1 or n > smallest:
        raise ValueError(
            f'labelled_per_class={labelled_per_class} must be between 1 and {smallest} (the '
            f'fewest train images of one class with test_size={test_size}).')
    rng = np.random.default_rng(int(subset_seed))
    # Each class draws its own permutation of its (sorted) train images: for one subset_seed the
    # first n of it are the subset, so a smaller N gives a subset of a larger N's images.
    picked = [rng.permutation(np.sort(t))[:n] for t in train]
    return np.sort(np.concatenate(picked))


def upsample_digits(images, image_size=32, interpolation='bilinear'):
    """8x8 images in 0..16 -> ``[N, image_size, image_size, 3]`` uint8 in 0..255."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f'interpolation={interpolation!r} is not one of {INTERPOLATIONS}.')
    x = torch.as_tensor(np.asarray(images, dtype=np.float32) * (255.0 / 16.0))[:, None]
    if int(image_size) != x.shape[-1]:
        kwargs = dict(align_corners=False) if interpolation == 'bilinear' else {}
        x = F.interpolate(x, size=(int(image_size), int(image_size)), mode=interpolation, **kwargs)
    x = x.round().clamp(0, 255).to(torch.uint8)[:, 0]
    return np.repeat(x.numpy()[..., None], 3, axis=-1)


@DATASETS.register_module()
class DigitsDataset(BaseDataset):
    """scikit-learn's 8x8 handwritten digits as 3-channel uint8 images (see the module docstring).

    Items follow mmpretrain's convention: ``results['img']`` is an ``[H, W, 3]`` uint8 array
    (no loading transform is needed: start the pipeline with ``PackInputs`` or any image
    transform), ``gt_label`` is the digit and ``digits_index`` the row in ``load_digits()``.

    Args:
        split (str): ``'train'`` or ``'test'``.
        image_size (int): side of the returned images (8 keeps the original resolution).
        interpolation (str): ``'bilinear'`` (default: smooth strokes, closer to natural images
            than 4x4 pixel blocks) or ``'nearest'``.
        labelled_per_class (int | None): keep only this many train images per class.
        split_seed (int): seed of the train/test split.
        subset_seed (int): seed of the ``labelled_per_class`` subset.
        test_size (int): images in the test split (600; the train split has the other 1,197).
        pipeline (list): mmpretrain transforms.
        **kwargs: other :class:`mmpretrain.datasets.BaseDataset` arguments (``indices``,
            ``test_mode``, ``serialize_data`` ...).
    """

    METAINFO = dict(classes=tuple(str(i) for i in range(NUM_CLASSES)))

    def __init__(self,
                 split='train',
                 image_size=32,
                 interpolation='bilinear',
                 labelled_per_class=None,
                 split_seed=0,
                 subset_seed=0,
                 test_size=600,
                 pipeline=(),
                 **kwargs):
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f'DigitsDataset interpolation={interpolation!r} is not one of '
                             f'{INTERPOLATIONS}.')
        if int(image_size) < 1:
            raise ValueError(f'DigitsDataset image_size must be positive, got {image_size}.')
        self.split = split
        self.image_size = int(image_size)
        self.interpolation = interpolation
        self.labelled_per_class = labelled_per_class
        self.split_seed = split_seed
        self.subset_seed = subset_seed
        self.test_size = test_size
        # Fail on bad split arguments now, not when the (possibly lazy) data list is loaded.
        _, labels = _load_digits()
        self._split_indices = digits_split_indices(labels, split, test_size, split_seed,
                                             labelled_per_class, subset_seed)
        kwargs.setdefault('ann_file', '')
        super().__init__(pipeline=pipeline, **kwargs)

    def load_data_list(self):
        images, labels = _load_digits()
        pixels = upsample_digits(images[self._split_indices], self.image_size, self.interpolation)
        shape = (self.image_size, self.image_size)
        return [
            dict(img=img, gt_label=int(labels[i]), digits_index=int(i), img_shape=shape,
                 ori_shape=shape) for i, img in zip(self._split_indices, pixels)
        ]

    def extra_repr(self):
        body = [f'Split: \t{self.split}', f'Image size: \t{self.image_size} ({self.interpolation})']
        if self.labelled_per_class is not None:
            body.append(f'Labelled per class: \t{self.labelled_per_class} '
                        f'(subset_seed={self.subset_seed})')
        return body
