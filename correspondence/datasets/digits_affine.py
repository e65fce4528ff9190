"""Correspondence pairs with exact ground truth: a handwritten digit and a random affine warp of it.

The digits demo's test set (``tools/demo_correspondence.py``): scikit-learn's digits (the test
split of :func:`common.datasets.digits.digits_split_indices`, the same 600 images
the classification demo holds out), each upsampled and centred on a black canvas; the target is
the source warped by a seeded random affine (rotation, scale, shear, translation). Keypoints are
sampled on the source's strokes and mapped by the same affine, so the ground truth is exact.

The one rule: coordinates follow the subtree's convention (pixel ``i``'s centre is at ``i``) and
the affine maps **source to target**, ``trg = A @ src + b`` in ``(x, y)``; the image is warped
with its inverse (``scipy.ndimage.affine_transform``, bilinear), so a keypoint lands exactly where
its pixel goes. :func:`write_spair_release` writes the pairs as an SPair-71k-format release
(``JPEGImages/<digit>/``, ``PairAnnotation/test/*.json``) read by the ordinary
:class:`~correspondence.datasets.SPair71kDataset` with ``metainfo=dict(classes=DIGIT_CLASSES)``.
"""
import json
import os
import os.path as osp

import numpy as np

DIGIT_CLASSES = tuple(str(d) for d in range(10))


def random_affine(rng, size, rotation=20.0, scale=(0.85, 1.15), shear=10.0, translation=0.1):
    """A random affine ``(A [2, 2], b [2])`` about the centre of a ``size x size`` image:
    rotation in ``±rotation`` degrees, isotropic scale in ``scale``, x-shear in ``±shear``
    degrees, translation in ``±translation * size`` pixels per axis."""
    theta = np.deg2rad(rng.uniform(-rotation, rotation))
    s = rng.uniform(*scale)
    sh = np.tan(np.deg2rad(rng.uniform(-shear, shear)))
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    A = s * rot @ np.array([[1.0, sh], [0.0, 1.0]])
    c = np.full(2, (size - 1) / 2.0)
    t = rng.uniform(-translation, translation, size=2) * size
    return A, c + t - A @ c


def apply_affine(points, A, b):
    """``[K, 2]`` points ``(x, y)`` mapped to ``A @ p + b``."""
    return np.asarray(points, dtype=np.float64) @ np.asarray(A).T + np.asarray(b)


def warp_image(image, A, b):
    """``image`` (``[H, W]`` float) warped by ``p -> A @ p + b`` (``(x, y)``, pixel centres at
    integers), bilinear, zero outside."""
    from scipy.ndimage import affine_transform
    inv = np.linalg.inv(A)
    # scipy works in (row, col) = (y, x): input[M @ o + off] for output index o
    swap = np.array([[0, 1], [1, 0]])
    matrix = swap @ inv @ swap
    offset = swap @ (-inv @ b)
    return affine_transform(image.astype(np.float64), matrix, offset=offset, order=1,
                            mode='constant', cval=0.0)


def stroke_box(image, threshold):
    """``[x1, y1, x2, y2]`` of the pixels above ``threshold`` (the digit's stroke box)."""
    ys, xs = np.nonzero(image > threshold)
    return [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]


def digit_canvas(digit8, size=64, digit_size=44):
    """An 8x8 digit (0..16) upsampled (bilinear) to ``digit_size`` and centred on a black
    ``size x size`` canvas; float in 0..255."""
    from common.datasets.digits import upsample_digits
    up = upsample_digits(np.asarray(digit8)[None], image_size=digit_size)[0, :, :, 0]
    canvas = np.zeros((size, size))
    o = (size - digit_size) // 2
    canvas[o:o + digit_size, o:o + digit_size] = up
    return canvas


def make_affine_pair(digit8, rng, size=64, digit_size=44, num_kps=12, stroke_threshold=128,
                     **affine):
    """One pair: ``dict(src, trg (float images 0..255), src_kps, trg_kps [K, 2], A, b)``.

    ``num_kps`` stroke pixels (above ``stroke_threshold``) of the source are drawn without
    replacement; points mapped outside the target image are dropped.
    """
    src = digit_canvas(digit8, size, digit_size)
    A, b = random_affine(rng, size, **affine)
    trg = warp_image(src, A, b)
    ys, xs = np.nonzero(src > stroke_threshold)
    pick = rng.choice(len(xs), size=min(num_kps, len(xs)), replace=False)
    src_kps = np.stack([xs[pick], ys[pick]], axis=1).astype(np.float64)
    trg_kps = apply_affine(src_kps, A, b)
    inside = ((trg_kps >= 0) & (trg_kps <= size - 1)).all(1)
    return dict(src=src, trg=trg, src_kps=src_kps[inside], trg_kps=trg_kps[inside], A=A, b=b)


# digits split -> the SPair-71k annotation folder its pairs are written to
SPLIT_FOLDERS = dict(test='test', train='trn')


def held_out_digits(num_pairs, seed=0, split='test'):
    """``num_pairs`` digits of one split of the digits (``'test'``: the 600 held-out images;
    ``'train'``: the teacher's training images), drawn with ``seed``:
    ``(images [N, 8, 8] in 0..16, labels [N], indices [N])``."""
    from common.datasets.digits import _load_digits, digits_split_indices
    images, labels = _load_digits()
    pool = digits_split_indices(labels, split=split)
    if not 0 < num_pairs <= len(pool):
        raise ValueError(f'num_pairs={num_pairs} must be in 1..{len(pool)} (the digits of the '
                         f'{split} split).')
    picked = np.sort(np.random.default_rng(seed).choice(pool, size=num_pairs, replace=False))
    return images[picked], labels[picked], picked


def write_spair_release(root, num_pairs, seed=0, size=64, digit_size=44, num_kps=12,
                        stroke_threshold=128, split='test', **affine):
    """Write ``num_pairs`` pairs as an SPair-71k-format release under ``root``; returns the
    pairs' summary (file names, keypoints, boxes, affines) as written.

    ``split='test'`` (default) draws the held-out digits and writes ``PairAnnotation/test``;
    ``split='train'`` draws the teacher's training digits and writes ``PairAnnotation/trn``
    (training pairs for a student: never the evaluation's digits).

    Layout: ``JPEGImages/<digit>/<index>_src.png`` and ``<index>_trg.png`` (lossless PNG under
    the release's folder name), ``PairAnnotation/<split>/<n>-<src>-<trg>:<digit>.json`` with the
    fields the reader needs (``src_kps``, ``trg_kps``, ``kps_ids``, stroke boxes as
    ``src_bndbox``/``trg_bndbox``, ``imsize`` ``[W, H, 3]``, zero difficulty flags) and, for the
    record, the affine (``affine_A``, ``affine_b``) and the digit's index in ``load_digits``.
    """
    from PIL import Image
    if split not in SPLIT_FOLDERS:
        raise ValueError(f'split={split!r}: use one of {tuple(SPLIT_FOLDERS)}.')
    digits8, labels, indices = held_out_digits(num_pairs, seed, split)
    rng = np.random.default_rng(seed + 1)
    ann_dir = osp.join(root, 'PairAnnotation', SPLIT_FOLDERS[split])
    os.makedirs(ann_dir, exist_ok=True)
    written = []
    for n, (digit8, label, index) in enumerate(zip(digits8, labels, indices)):
        pair = make_affine_pair(digit8, rng, size, digit_size, num_kps, stroke_threshold, **affine)
        category = str(int(label))
        names = {}
        for side in ('src', 'trg'):
            names[side] = f'{int(index):04d}_{side}'
            path = osp.join(root, 'JPEGImages', category, names[side] + '.png')
            os.makedirs(osp.dirname(path), exist_ok=True)
            gray = np.clip(np.rint(pair[side]), 0, 255).astype(np.uint8)
            Image.fromarray(gray).convert('RGB').save(path)
        filename = f'{n:06d}-{names["src"]}-{names["trg"]}:{category}'
        ann = dict(
            pair_id=n, filename=filename, category=category,
            src_imname=names['src'] + '.png', trg_imname=names['trg'] + '.png',
            src_imsize=[size, size, 3], trg_imsize=[size, size, 3],
            src_bndbox=stroke_box(pair['src'], stroke_threshold),
            trg_bndbox=stroke_box(pair['trg'], stroke_threshold),
            src_kps=pair['src_kps'].tolist(), trg_kps=pair['trg_kps'].tolist(),
            kps_ids=[str(i) for i in range(len(pair['src_kps']))],
            viewpoint_variation=0, scale_variation=0, truncation=0, occlusion=0, mirror=0,
            affine_A=pair['A'].tolist(), affine_b=pair['b'].tolist(), digits_index=int(index))
        with open(osp.join(ann_dir, filename + '.json'), 'w') as f:
            json.dump(ann, f)
        written.append(ann)
    return written
