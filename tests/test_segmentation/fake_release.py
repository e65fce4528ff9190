"""A tiny CelebAMask-HQ release written in the official on-disk formats.

Images are ``CelebA-HQ-img/<id>.jpg`` (twice the mask size like the release, one at the mask
size), masks are ``CelebAMask-HQ-mask-anno/<id // 2000>/<id:05d>_<part>.png`` (white part on black;
some grayscale, some RGB). Sizes are scaled down from the release's 1024/512 to 256/128 (the
converter's ``--size``), plus the CelebA-HQ -> CelebA mapping and CelebA's
partition list. Some ids are broken on purpose (see ``BROKEN``).
"""
import os
import os.path as osp

import numpy as np
from PIL import Image

MASK_SIZE = 128  # the release's masks are 512x512; the converter takes --size
IMAGE_SIZE = 256  # twice the mask size, as in the release (1024 images, 512 masks)

# Part rectangles (row0, row1, col0, col1) in mask pixels; they overlap on purpose.
RECTS = {
    'skin': (25, 100, 25, 103),
    'hair': (10, 40, 20, 108),    # over skin rows 25..39
    'hat': (5, 20, 38, 90),       # over hair rows 10..19
    'l_eye': (50, 58, 38, 50),
    'r_eye': (50, 58, 78, 90),
    'eye_g': (54, 61, 35, 93),    # over the lower half of both eyes
    'l_brow': (45, 48, 38, 50),
    'r_brow': (45, 48, 78, 90),
    'nose': (62, 75, 59, 69),
    'u_lip': (80, 84, 52, 76),
    'l_lip': (84, 88, 52, 76),
    'neck': (100, 118, 45, 83),
    'cloth': (112, 128, 0, 128),  # over neck rows 112..117
    'l_ear': (55, 70, 17, 25),
    'ear_r': (67, 72, 20, 24),    # over l_ear rows 67..69
}

# Hand-written expectations: (row, col) -> label id of the 19-class map.
EXPECTED_PIXELS = {
    (0, 0): 0,      # background
    (75, 30): 1,    # skin
    (46, 44): 2,    # l_brow
    (46, 84): 3,    # r_brow
    (51, 44): 4,    # l_eye (upper half, not under the glasses)
    (51, 84): 5,    # r_eye
    (59, 44): 6,    # eye_g wins over l_eye
    (59, 64): 6,    # eye_g over skin
    (60, 20): 7,    # l_ear
    (68, 22): 9,    # ear_r wins over l_ear
    (70, 64): 10,   # nose
    (82, 64): 12,   # u_lip
    (86, 64): 13,   # l_lip
    (105, 64): 14,  # neck
    (115, 64): 16,  # cloth wins over neck
    (30, 64): 17,   # hair wins over skin
    (15, 64): 18,   # hat wins over hair
    (7, 25): 0,     # background left of the hat
}

# id -> CelebA file number. CelebA's partition: 1..162770 train, 162771..182637 val,
# 182638..202599 test.
MAPPING = {0: 5, 1: 777, 2: 162771, 3: 170000, 4: 182638, 5: 200000, 6: 1000,
           7: 2000, 8: 190000, 9: 3000, 11: 202600}
SPLIT_OF = {0: 'train', 1: 'train', 2: 'val', 3: 'val', 4: 'test', 5: 'test', 6: 'train'}

BROKEN = {
    7: 'CelebAMask-HQ-mask-anno/0/00007_hair.png',     # not a PNG
    8: 'CelebAMask-HQ-mask-anno/0/00008_nose.png',     # 64x64 instead of 128x128
    9: 'CelebA-HQ-img/9.jpg',                          # image missing
    10: 'CelebA-HQ-img/10.jpg',                        # id 10 not in the mapping
    11: 'CelebA 202600.jpg',                           # mapped file not in the partition
}
SMALL_IMAGE_ID = 6  # already at the mask size: copied byte for byte


def _partition_split(number):
    if number <= 162770:
        return 0
    return 1 if number <= 182637 else 2


def _face_image(idx, size):
    rows = np.linspace(0, 255, size, dtype=np.float32)[:, None]
    cols = np.linspace(255, 0, size, dtype=np.float32)[None, :]
    img = np.stack([rows + 0 * cols, 0 * rows + cols, (rows + cols) / 2], axis=2)
    img = (img + 20 * idx) % 256
    return Image.fromarray(img.astype(np.uint8))


def _mask(rect, size=MASK_SIZE, rgb=False):
    mask = np.zeros((size, size), dtype=np.uint8)
    r0, r1, c0, c1 = rect
    mask[r0:r1, c0:c1] = 255
    if rgb:
        return Image.fromarray(np.stack([mask] * 3, axis=2))
    return Image.fromarray(mask)


def write_fake_release(root):
    """Write the fake release into ``root``; returns ``root``."""
    img_dir = osp.join(root, 'CelebA-HQ-img')
    os.makedirs(img_dir, exist_ok=True)
    for idx in list(MAPPING) + [10]:
        if idx == 9:
            continue
        size = MASK_SIZE if idx == SMALL_IMAGE_ID else IMAGE_SIZE
        _face_image(idx, size).save(osp.join(img_dir, f'{idx}.jpg'), quality=90)
    for idx in MAPPING:
        folder = osp.join(root, 'CelebAMask-HQ-mask-anno', str(idx // 2000))
        os.makedirs(folder, exist_ok=True)
        for k, (part, rect) in enumerate(RECTS.items()):
            _mask(rect, rgb=bool(k % 2)).save(osp.join(folder, f'{idx:05d}_{part}.png'))
    with open(osp.join(root, BROKEN[7]), 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n this is not really a png')
    _mask(RECTS['nose'], size=MASK_SIZE // 2).save(osp.join(root, BROKEN[8]))
    # masks of id 10 (image present, id absent from the mapping)
    _mask(RECTS['skin']).save(osp.join(root, 'CelebAMask-HQ-mask-anno', '0', '00010_skin.png'))
    with open(osp.join(root, 'CelebA-HQ-to-CelebA-mapping.txt'), 'w') as f:
        f.write('idx         orig_idx    orig_file   \n')
        for idx, number in MAPPING.items():
            f.write(f'{idx:<12d}{number - 1:<12d}{number:06d}.jpg\n')
    with open(osp.join(root, 'list_eval_partition.txt'), 'w') as f:
        numbers = sorted(set(MAPPING.values()) - {202600} | {1, 2, 162770, 182637, 202599})
        for number in numbers:
            f.write(f'{number:06d}.jpg {_partition_split(number)}\n')
    return root


def expected_label():
    """The full label map every intact fake id must convert to (painted by hand order)."""
    hand_order = ['skin', 'l_brow', 'r_brow', 'l_eye', 'r_eye', 'eye_g', 'l_ear', 'r_ear',
                  'ear_r', 'nose', 'mouth', 'u_lip', 'l_lip', 'neck', 'neck_l', 'cloth',
                  'hair', 'hat']
    label = np.zeros((MASK_SIZE, MASK_SIZE), dtype=np.uint8)
    for value, part in enumerate(hand_order, start=1):
        if part in RECTS:
            r0, r1, c0, c1 = RECTS[part]
            label[r0:r1, c0:c1] = value
    return label
