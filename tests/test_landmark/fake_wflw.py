"""A tiny fake WFLW release in the official layout, with synthetic mirror-symmetric faces."""
import os
import os.path as osp

import numpy as np

ATTRIBUTES = ('largepose', 'expression', 'illumination', 'makeup', 'occlusion', 'blur')
LIST_DIR = osp.join('WFLW_annotations', 'list_98pt_rect_attr_train_test')


def _ellipse(center, rx, ry, phis):
    cx, cy = center
    # image coordinates (y down): decreasing phi walks clockwise on screen
    return [(cx + rx * np.cos(p), cy - ry * np.sin(p)) for p in phis]


def synthetic_face(cx=0.0, cy=0.0, size=1.0):
    """98 WFLW points of a face symmetric about x = cx, built from the mark-up's description.

    Written from the part order of the WFLW mark-up (not from any flip table), so that mirroring
    it checks the flip pairs of the metainfo independently.
    """
    pts = []
    t = np.linspace(0, np.pi, 33)  # contour: image-left temple, chin (16), image-right temple
    pts += [(-np.cos(a), 0.1 + 1.1 * np.sin(a)) for a in t]
    # right eyebrow (image left): upper edge outer -> inner, lower edge inner -> outer
    pts += [(x, -0.55 - 0.05 * np.sin(np.pi * (x + 0.8) / 0.6)) for x in np.linspace(-0.8, -0.2, 5)]
    pts += [(x, -0.42) for x in np.linspace(-0.3, -0.7, 4)]
    # left eyebrow (image right): upper edge inner -> outer, lower edge outer -> inner
    pts += [(x, -0.55 - 0.05 * np.sin(np.pi * (0.8 - x) / 0.6)) for x in np.linspace(0.2, 0.8, 5)]
    pts += [(x, -0.42) for x in np.linspace(0.7, 0.3, 4)]
    pts += [(0.0, y) for y in np.linspace(-0.3, 0.2, 4)]  # nose bridge, top to tip
    pts += [(x, 0.3) for x in np.linspace(-0.2, 0.2, 5)]  # nose base, image left to right
    eye_phis = np.pi - np.arange(8) * np.pi / 4  # left corner, upper lid, right corner, lower lid
    pts += _ellipse((-0.45, -0.2), 0.2, 0.08, eye_phis)  # right eye: 60 outer, 64 inner corner
    pts += _ellipse((0.45, -0.2), 0.2, 0.08, eye_phis)  # left eye: 68 inner, 72 outer corner
    pts += _ellipse((0.0, 0.65), 0.35, 0.15, np.pi - np.arange(12) * np.pi / 6)  # outer lip
    pts += _ellipse((0.0, 0.65), 0.25, 0.06, np.pi - np.arange(8) * np.pi / 4)  # inner lip
    pts += [(-0.45, -0.2), (0.45, -0.2)]  # pupils
    pts = np.array(pts, dtype=np.float64)
    assert pts.shape == (98, 2)
    return pts * size + np.array([cx, cy])


def face_line(points, box, flags, image):
    """One annotation line in the official format."""
    coords = ' '.join(f'{v:.3f}' for v in np.asarray(points).reshape(-1))
    box_s = ' '.join(str(int(v)) for v in box)
    flag_s = ' '.join(str(int(flags.get(a, 0))) for a in ATTRIBUTES)
    return f'{coords} {box_s} {flag_s} {image}'


def write_image(path, width, height, points=None, seed=0):
    """A small jpg; the landmarks are painted so that the image is not pure noise."""
    import cv2
    rng = np.random.default_rng(seed)
    img = rng.integers(60, 120, size=(height, width, 3), dtype=np.uint8)
    if points is not None:
        for x, y in points:
            cv2.circle(img, (int(round(x)), int(round(y))), 1, (230, 230, 230), -1)
    os.makedirs(osp.dirname(path), exist_ok=True)
    assert cv2.imwrite(path, img)


# (image, width, height, face centre x, y, face size, flags) per face of each split
TRAIN_FACES = [
    ('0--Parade/0_Parade_a.jpg', 128, 112, 63.5, 50.0, 30.0, {}),
    ('0--Parade/0_Parade_a.jpg', 128, 112, 95.0, 70.0, 20.0, {'blur': 1}),  # 2nd face, same image
    ('1--Handshaking/1_Hand_b.jpg', 96, 96, 47.5, 44.0, 28.0, {'expression': 1}),
    ('2--Demonstration/2_Demo_c.jpg', 112, 128, 55.5, 60.0, 32.0, {'occlusion': 1}),
]
TEST_FACES = [
    ('10--People/10_People_d.jpg', 128, 128, 63.5, 60.0, 34.0, {'largepose': 1, 'blur': 1}),
    ('11--Meeting/11_Meeting_e.jpg', 96, 112, 47.5, 52.0, 26.0,
     {'expression': 1, 'occlusion': 1}),
    ('12--Group/12_Group_f.jpg', 112, 96, 55.5, 45.0, 24.0,
     {'illumination': 1, 'makeup': 1, 'blur': 1}),
    ('12--Group/12_Group_f.jpg', 112, 96, 25.0, 40.0, 12.0, {}),
]


def face_box(points, margin=0.1):
    lo, hi = points.min(axis=0), points.max(axis=0)
    pad = (hi - lo) * margin
    return (*np.floor(lo - pad), *np.ceil(hi + pad))


def make_fake_release(root, malformed_train_line=True, missing_test_image=True):
    """Write the fake release under ``root``. Returns what the converter should report/keep.

    The train list gets a malformed line (line 3: a coordinate dropped) and the test list a face
    in an image that does not exist (line 2).
    """
    lines = dict(train=[], test=[])
    kept = dict(train=[], test=[])
    for split, faces in (('train', TRAIN_FACES), ('test', TEST_FACES)):
        written = set()
        for n, (image, w, h, cx, cy, size, flags) in enumerate(faces):
            pts = synthetic_face(cx, cy, size)
            box = face_box(pts)
            if image not in written:
                write_image(osp.join(root, 'WFLW_images', image), w, h, pts, seed=n)
                written.add(image)
            lines[split].append(face_line(pts, box, flags, image))
            kept[split].append(dict(image=image, points=pts, box=box, flags=flags,
                                    size=(w, h)))
    if malformed_train_line:
        pts = synthetic_face(40, 40, 20)
        bad = face_line(pts, face_box(pts), {}, '0--Parade/0_Parade_a.jpg').split()
        del bad[5]
        lines['train'].insert(2, ' '.join(bad))  # line 3
    if missing_test_image:
        pts = synthetic_face(40, 40, 20)
        lines['test'].insert(1, face_line(pts, face_box(pts), {'largepose': 1},
                                          '13--Interview/13_missing.jpg'))  # line 2
    os.makedirs(osp.join(root, LIST_DIR), exist_ok=True)
    for split in ('train', 'test'):
        with open(osp.join(root, LIST_DIR, f'list_98pt_rect_attr_{split}.txt'), 'w') as f:
            f.write('\n'.join(lines[split]) + '\n')
    return kept
