"""A tiny fake ddpm-segmentation release, written in the real on-disk format.

``<root>/<name>/real/{train,test}/``: images in several formats (png, jpg, jpeg, an upper-case
``.PNG``, a gif in a sub-folder) and, next to each, the same-stem ``.npy`` mask of class ids, plus
a file that is not an image (``notes.txt``) that readers must skip. Masks are drawn in blocks of
``block`` x ``block`` pixels from the dataset's class ids, with a few ``ignore_label`` pixels.
"""
import os
import os.path as osp

import numpy as np
from PIL import Image

#: Relative paths (without extension) and formats of the train images, NOT in sorted order;
#: sorted by full path they are a, b, d, e, sub/c.
TRAIN_FILES = (('b', 'png'), ('a', 'jpg'), ('sub/c', 'gif'), ('d', 'jpeg'), ('e', 'PNG'))
TRAIN_SORTED = ('a', 'b', 'd', 'e', 'sub/c')
TEST_FILES = (('t0', 'png'), ('t1', 'png'), ('t2', 'jpg'))


def fake_mask(rng, size, number_class, ignore_label, block=4, num_ignore=3):
    """``uint8 [size, size]``: blocks of random class ids, ``num_ignore`` ignored pixels."""
    cells = -(-size // block)
    ids = rng.integers(0, number_class, size=(cells, cells))
    mask = np.kron(ids, np.ones((block, block), dtype=np.int64))[:size, :size]
    mask = mask.astype(np.uint8)
    flat = rng.choice(size * size, size=num_ignore, replace=False)
    mask.reshape(-1)[flat] = ignore_label
    return mask


def fake_image(rng, size):
    """``uint8 [size, size, 3]``: a smooth gradient plus noise (compresses without surprises)."""
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([xx * 255 / max(size - 1, 1), yy * 255 / max(size - 1, 1),
                     np.full((size, size), 128.0)], axis=-1)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def write_image(path, image):
    """Save ``image`` in the format of ``path``'s extension (a gif is quantised by PIL)."""
    os.makedirs(osp.dirname(path), exist_ok=True)
    ext = path.rsplit('.', 1)[1].lower()
    fmt = dict(png='PNG', jpg='JPEG', jpeg='JPEG', gif='GIF')[ext]
    Image.fromarray(image).save(path, format=fmt)


def write_split(folder, files, rng, size, number_class, ignore_label, block=4):
    """Write ``files`` (``(relative stem, extension)``) with masks; returns ``{stem: mask}``."""
    masks = {}
    for stem, ext in files:
        image_path = osp.join(folder, stem + '.' + ext)
        write_image(image_path, fake_image(rng, size))
        mask = fake_mask(rng, size, number_class, ignore_label, block)
        np.save(osp.join(folder, stem + '.npy'), mask)
        masks[stem] = mask
    return masks


def write_fake_ddpm_seg_release(root, name='cat_15', size=20, seed=0, train_files=TRAIN_FILES,
                                test_files=TEST_FILES, block=4):
    """Write ``<root>/<name>/real/{train,test}/``; returns ``dict(train={stem: mask}, test=...)``.

    Class ids and the ignore label come from ``DDPM_SEG_DATASETS[name]``.
    """
    from segmentation.datasets.ddpm_seg import DDPM_SEG_DATASETS
    info = DDPM_SEG_DATASETS[name]
    rng = np.random.default_rng(seed)
    out = {}
    for split, files in (('train', train_files), ('test', test_files)):
        folder = osp.join(root, name, 'real', split)
        os.makedirs(folder, exist_ok=True)
        out[split] = write_split(folder, files, rng, size, info.number_class, info.ignore_label,
                                 block)
        with open(osp.join(folder, 'notes.txt'), 'w') as f:
            f.write('not an image\n')
    return out
