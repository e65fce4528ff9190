"""Tiny fake releases of SPair-71k, PF-WILLOW, PF-PASCAL and CUB-200-2011 in their on-disk formats.

Each ``write_*(root)`` lays out, under ``root``, the files the official archive extracts to (small
JPEG/PNG images written with PIL, the JSON/CSV/txt annotation files with the release's names and
columns) and returns what it wrote: ``dict(root=..., pairs=...)`` with the pairs a reader must
return, as contract dicts (keypoints as float32 arrays), so tests compare exact values.
"""
import csv
import json
import os
import os.path as osp

import numpy as np


def _image(path, size, seed=0):
    from PIL import Image
    os.makedirs(osp.dirname(path), exist_ok=True)
    w, h = size
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def _f32(points):
    return np.asarray(points, dtype=np.float32).reshape(-1, 2)


# --------------------------------------------------------------------------------------------
# SPair-71k: JPEGImages/<cat>/<name>.jpg, ImageAnnotation/<cat>/<name>.json,
# PairAnnotation/<split>/<id>-<src>-<trg>:<cat>.json, Layout/large/<split>.txt
SPAIR_IMAGES = {
    # name: (category, (W, H), bndbox, {kp_id: (x, y)} of its 30 points, pose)
    '2008_000001': ('aeroplane', (40, 30), [2, 3, 35, 27],
                    {0: (5, 6), 1: (10, 12), 2: (20, 8), 4: (30, 20)}, 'Left'),
    '2008_000002': ('aeroplane', (36, 32), [1, 1, 30, 29],
                    {0: (6, 7), 1: (12, 10), 3: (25, 25), 4: (28, 18)}, 'Right'),
    '2008_000003': ('aeroplane', (32, 32), [0, 4, 31, 30],
                    {0: (4, 5), 2: (18, 9), 4: (26, 22)}, 'Frontal'),
    '2009_000010': ('cat', (24, 40), [3, 2, 20, 38], {7: (5, 10), 8: (15, 12), 9: (12, 30)},
                    'Unspecified'),
    '2009_000011': ('cat', (30, 30), [2, 2, 28, 27], {7: (8, 9), 9: (14, 25), 10: (20, 5)},
                    'Frontal'),
}
# split: [(pair number, src, trg, flags)]
SPAIR_PAIRS = {
    'test': [
        (1, '2008_000001', '2008_000002', dict(viewpoint_variation=1, scale_variation=0,
                                                truncation=0, occlusion=1, mirror=0)),
        (2, '2008_000001', '2008_000003', dict(viewpoint_variation=2, scale_variation=1,
                                                truncation=0, occlusion=0, mirror=0)),
        (3, '2008_000002', '2008_000003', dict(viewpoint_variation=2, scale_variation=0,
                                                truncation=1, occlusion=0, mirror=1)),
        (4, '2009_000010', '2009_000011', dict(viewpoint_variation=0, scale_variation=2,
                                                truncation=0, occlusion=0, mirror=0)),
    ],
    'trn': [(5, '2009_000011', '2009_000010', dict(viewpoint_variation=0, scale_variation=0,
                                                   truncation=0, occlusion=0, mirror=1))],
    'val': [(6, '2008_000003', '2008_000001', dict(viewpoint_variation=1, scale_variation=0,
                                                   truncation=0, occlusion=0, mirror=0))],
}


def write_spair(root):
    """A fake ``SPair-71k/`` (two categories); returns ``dict(root, pairs={split: [pair]})``."""
    root = osp.join(root, 'SPair-71k')
    for seed, (name, (cat, size, box, kps, pose)) in enumerate(SPAIR_IMAGES.items()):
        _image(osp.join(root, 'JPEGImages', cat, name + '.jpg'), size, seed)
        ann = dict(filename=name + '.jpg', src_database='PASCAL VOC 2012',
                   src_annotation=f'Annotations/{name}.xml', src_image=f'JPEGImages/{name}.jpg',
                   image_width=size[0], image_height=size[1], image_depth=3, category=cat,
                   pose=pose, truncated=0, occluded=0, difficult=0, bndbox=box, azimuth_id=0,
                   kps={str(i): (list(kps[i]) if i in kps else None) for i in range(30)})
        path = osp.join(root, 'ImageAnnotation', cat, name + '.json')
        os.makedirs(osp.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            json.dump(ann, f, indent=1)
    expected = {}
    for split, pairs in SPAIR_PAIRS.items():
        folder = osp.join(root, 'PairAnnotation', split)
        os.makedirs(folder, exist_ok=True)
        names = []
        expected[split] = []
        for number, src, trg, flags in pairs:
            cat, src_size, src_box, src_all, src_pose = SPAIR_IMAGES[src]
            _, trg_size, trg_box, trg_all, trg_pose = SPAIR_IMAGES[trg]
            ids = sorted(set(src_all) & set(trg_all))
            filename = f'{number:06d}-{src}-{trg}:{cat}'
            ann = dict(
                pair_id=number, src_imname=src + '.jpg', trg_imname=trg + '.jpg',
                src_imsize=[*src_size, 3], trg_imsize=[*trg_size, 3], src_bndbox=src_box,
                trg_bndbox=trg_box, category=cat, src_pose=src_pose, trg_pose=trg_pose,
                src_kps=[list(src_all[i]) for i in ids], trg_kps=[list(trg_all[i]) for i in ids],
                kps_ids=[str(i) for i in ids], **flags, filename=filename)
            with open(osp.join(folder, filename + '.json'), 'w') as f:
                json.dump(ann, f)
            names.append(filename)
            expected[split].append(dict(
                pair_id=filename, category=cat,
                src_img_path=osp.join(root, 'JPEGImages', cat, src + '.jpg'),
                trg_img_path=osp.join(root, 'JPEGImages', cat, trg + '.jpg'),
                src_imsize=tuple(src_size), trg_imsize=tuple(trg_size),
                src_kps=_f32([src_all[i] for i in ids]), trg_kps=_f32([trg_all[i] for i in ids]),
                kps_ids=ids, src_bbox=[float(v) for v in src_box],
                trg_bbox=[float(v) for v in trg_box], difficulty=dict(flags),
                src_pose=src_pose, trg_pose=trg_pose))
        for layout in ('large', 'small'):
            path = osp.join(root, 'Layout', layout, split + '.txt')
            os.makedirs(osp.dirname(path), exist_ok=True)
            with open(path, 'w') as f:
                f.write(''.join(n + '\n' for n in names))
    return dict(root=root, pairs=expected)


# --------------------------------------------------------------------------------------------
# PF-WILLOW: test_pairs_pf.csv next to PF-dataset/<category>/<name>.png
WILLOW_IMAGES = {
    'PF-dataset/car(G)/Cars_006a.png': (40, 30),
    'PF-dataset/car(G)/Cars_007a.png': (44, 34),
    'PF-dataset/duck(S)/060_0071.png': (30, 40),
    'PF-dataset/duck(S)/060_0072.png': (32, 32),
    'PF-dataset/winebottle(wC)/Wine_001.png': (20, 48),
    'PF-dataset/winebottle(wC)/Wine_002.png': (24, 50),
}
WILLOW_PAIRS = [
    ('PF-dataset/car(G)/Cars_006a.png', 'PF-dataset/car(G)/Cars_007a.png'),
    ('PF-dataset/duck(S)/060_0071.png', 'PF-dataset/duck(S)/060_0072.png'),
    ('PF-dataset/winebottle(wC)/Wine_001.png', 'PF-dataset/winebottle(wC)/Wine_002.png'),
]


def _willow_kps(index, size, shift):
    w, h = size
    t = np.arange(10, dtype=np.float64)
    x = np.round((t * 3.5 + index + shift) % (w - 1), 2)
    y = np.round((t * 4.25 + 2 * index + shift) % (h - 1), 2)
    return np.stack([x, y], axis=1)


def write_pf_willow(root, folder='PF-dataset'):
    """A fake PF-WILLOW: ``root/test_pairs_pf.csv`` and the images under ``root/<folder>/``.

    ``folder='PF-dataset'`` is the release; another name (``'PF-WILLOW'``) writes the images
    under ``root/PF-WILLOW/`` with the CSV inside it (DistillDIFT's renamed layout, where
    ``data_root`` is that folder). Returns ``dict(root=<data_root>, csv, pairs)``.
    """
    data_root = root if folder == 'PF-dataset' else osp.join(root, folder)
    image_root = osp.join(data_root, 'PF-dataset') if folder == 'PF-dataset' else data_root
    for seed, (rel, size) in enumerate(WILLOW_IMAGES.items()):
        _image(osp.join(image_root, rel.split('/', 1)[1]), size, seed)
    header = (['imageA', 'imageB'] + [f'XA{i}' for i in range(1, 11)]
              + [f'YA{i}' for i in range(1, 11)] + [f'XB{i}' for i in range(1, 11)]
              + [f'YB{i}' for i in range(1, 11)])
    rows, pairs = [], []
    for index, (src, trg) in enumerate(WILLOW_PAIRS):
        a = _willow_kps(index, WILLOW_IMAGES[src], 1.5)
        b = _willow_kps(index, WILLOW_IMAGES[trg], 2.25)
        rows.append([src, trg] + [f'{v:g}' for v in (*a[:, 0], *a[:, 1], *b[:, 0], *b[:, 1])])
        category = src.split('/')[1]
        pairs.append(dict(
            pair_id=f'{index}:{category}', category=category, **{'class': category.split('(')[0]},
            src_img_path=osp.join(image_root, src.split('/', 1)[1]),
            trg_img_path=osp.join(image_root, trg.split('/', 1)[1]),
            src_imsize=WILLOW_IMAGES[src], trg_imsize=WILLOW_IMAGES[trg],
            src_kps=_f32(a), trg_kps=_f32(b), kps_ids=list(range(10)), src_bbox=None,
            trg_bbox=None, difficulty={}))
    os.makedirs(data_root, exist_ok=True)
    csv_path = osp.join(data_root, 'test_pairs_pf.csv')
    with open(csv_path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return dict(root=data_root, csv=csv_path, pairs=pairs)


# --------------------------------------------------------------------------------------------
# PF-PASCAL: <split>_pairs_pf_pascal.csv next to PF-dataset-PASCAL/JPEGImages/<name>.jpg
PASCAL_IMAGES = {
    '2007_000063': (40, 30), '2007_000129': (36, 36), '2008_000008': (30, 44),
    '2008_000033': (48, 32),
}
# split: [(src, trg, class number, XA, YA, XB, YB)] as the CSV cells hold them
PASCAL_PAIRS = {
    'test': [
        ('2007_000063', '2007_000129', 1, [3, 10.5, 20, 33], [4, 8, 12.25, 20],
         [5, 12, 22, 30], [6, 9, 14, 25]),
        # the last point is padding (-1) in the target: dropped
        ('2008_000008', '2008_000033', 12, [4, 9, 15, 21, 25], [5, 10, 20, 30, 40],
         [6, 11, 30, 40, -1], [7, 12, 14, 20, -1]),
    ],
    'val': [('2007_000129', '2007_000063', 20, [1, 2], [3, 4], [5, 6], [7, 8])],
}


def write_pf_pascal(root):
    """A fake PF-PASCAL: ``root/{test,val}_pairs_pf_pascal.csv`` and
    ``root/PF-dataset-PASCAL/JPEGImages/*.jpg``. Returns ``dict(root, pairs={split: [pair]})``."""
    from correspondence.datasets import PF_PASCAL_CLASSES
    image_dir = osp.join(root, 'PF-dataset-PASCAL', 'JPEGImages')
    for seed, (name, size) in enumerate(PASCAL_IMAGES.items()):
        _image(osp.join(image_dir, name + '.jpg'), size, seed)
    expected = {}
    for split, pairs in PASCAL_PAIRS.items():
        expected[split] = []
        with open(osp.join(root, f'{split}_pairs_pf_pascal.csv'), 'w', newline='') as f:
            writer = csv.writer(f)
            writer.writerow(['source_image', 'target_image', 'class', 'XA', 'YA', 'XB', 'YB'])
            for index, (src, trg, label, xa, ya, xb, yb) in enumerate(pairs):
                writer.writerow([f'PF-dataset-PASCAL/JPEGImages/{src}.jpg',
                                 f'PF-dataset-PASCAL/JPEGImages/{trg}.jpg', label,
                                 *(';'.join(f'{v:g}' for v in c) for c in (xa, ya, xb, yb))])
                keep = [i for i in range(len(xa)) if min(xa[i], ya[i], xb[i], yb[i]) >= 0]
                category = PF_PASCAL_CLASSES[label - 1]
                expected[split].append(dict(
                    pair_id=f'{index}:{category}', category=category,
                    src_img_path=osp.join(image_dir, src + '.jpg'),
                    trg_img_path=osp.join(image_dir, trg + '.jpg'),
                    src_imsize=PASCAL_IMAGES[src], trg_imsize=PASCAL_IMAGES[trg],
                    src_kps=_f32([(xa[i], ya[i]) for i in keep]),
                    trg_kps=_f32([(xb[i], yb[i]) for i in keep]),
                    kps_ids=keep, src_bbox=None, trg_bbox=None, difficulty={}))
    return dict(root=root, pairs=expected)


# --------------------------------------------------------------------------------------------
# CUB-200-2011: images.txt, train_test_split.txt, image_class_labels.txt, classes.txt,
# bounding_boxes.txt, parts/parts.txt, parts/part_locs.txt, images/<class>/<name>.jpg
CUB_PARTS = ('back', 'beak', 'belly', 'breast', 'crown', 'forehead', 'left eye', 'left leg',
             'left wing', 'nape', 'right eye', 'right leg', 'right wing', 'tail', 'throat')
CUB_CLASSES = ('001.Black_footed_Albatross', '002.Laysan_Albatross')
# image id: (class id, is_train, (W, H), (x, y, w, h), {part id: (x, y)} of the visible parts)
CUB_IMAGES = {
    1: (1, 0, (40, 30), (2.0, 3.0, 30.0, 25.0), {1: (5.0, 6.0), 2: (10.0, 12.0), 5: (20.5, 8.0)}),
    2: (1, 1, (36, 32), (1.0, 1.0, 30.0, 28.0), {1: (6.0, 7.0), 2: (12.0, 10.0)}),
    3: (1, 0, (32, 32), (0.0, 4.0, 31.0, 26.0), {2: (18.0, 9.0), 5: (26.0, 22.0), 9: (3.0, 3.0)}),
    4: (1, 0, (30, 40), (3.0, 2.0, 20.0, 36.0), {1: (4.0, 4.0), 9: (7.0, 30.0)}),
    5: (1, 0, (28, 28), (2.0, 2.0, 24.0, 24.0), {15: (14.0, 14.0)}),  # shares nothing
    6: (2, 0, (24, 40), (3.0, 2.0, 17.0, 36.0), {3: (5.0, 10.0), 4: (15.0, 12.0)}),
    7: (2, 0, (30, 30), (2.0, 2.0, 26.0, 25.0), {3: (8.0, 9.0), 4: (14.0, 25.0), 6: (9.0, 9.0)}),
    8: (2, 1, (26, 26), (1.0, 1.0, 20.0, 20.0), {3: (1.0, 2.0)}),
    9: (2, 0, (34, 28), (1.0, 2.0, 30.0, 20.0), {4: (20.0, 5.0), 6: (11.5, 7.25)}),
}


def _cub_path(image_id):
    label = CUB_IMAGES[image_id][0]
    species = CUB_CLASSES[label - 1].split('.', 1)[1]
    return f'{CUB_CLASSES[label - 1]}/{species}_{image_id:04d}_{100 + image_id}.jpg'


def write_cub(root):
    """A fake ``CUB_200_2011/`` (two classes, nine images); returns ``dict(root, pairs)`` with
    ``pairs`` every within-class pair of test images sharing a visible part, in class then id
    order (what ``num_pairs=None`` gives)."""
    import itertools
    root = osp.join(root, 'CUB_200_2011')
    os.makedirs(osp.join(root, 'parts'), exist_ok=True)
    ids = sorted(CUB_IMAGES)
    for image_id in ids:
        _image(osp.join(root, 'images', _cub_path(image_id)), CUB_IMAGES[image_id][2], image_id)
    lines = dict(
        images=[f'{i} {_cub_path(i)}' for i in ids],
        train_test_split=[f'{i} {CUB_IMAGES[i][1]}' for i in ids],
        image_class_labels=[f'{i} {CUB_IMAGES[i][0]}' for i in ids],
        classes=[f'{n + 1} {name}' for n, name in enumerate(CUB_CLASSES)],
        bounding_boxes=[f'{i} ' + ' '.join(f'{v:.1f}' for v in CUB_IMAGES[i][3]) for i in ids],
    )
    for name, content in lines.items():
        with open(osp.join(root, name + '.txt'), 'w') as f:
            f.write(''.join(line + '\n' for line in content))
    with open(osp.join(root, 'parts', 'parts.txt'), 'w') as f:
        f.write(''.join(f'{n + 1} {part}\n' for n, part in enumerate(CUB_PARTS)))
    with open(osp.join(root, 'parts', 'part_locs.txt'), 'w') as f:
        for i in ids:
            parts = CUB_IMAGES[i][4]
            for p in range(1, 16):
                x, y = parts.get(p, (0.0, 0.0))
                f.write(f'{i} {p} {float(x)} {float(y)} {int(p in parts)}\n')
    pairs = []
    for label in (1, 2):
        test = [i for i in ids if CUB_IMAGES[i][0] == label and CUB_IMAGES[i][1] == 0]
        for a, b in itertools.combinations(test, 2):
            common = sorted(set(CUB_IMAGES[a][4]) & set(CUB_IMAGES[b][4]))
            if not common:
                continue
            (x, y, w, h), (u, v, s, t) = CUB_IMAGES[a][3], CUB_IMAGES[b][3]
            category = CUB_CLASSES[label - 1]
            pairs.append(dict(
                pair_id=f'{a}-{b}:{category}', category=category,
                src_img_path=osp.join(root, 'images', _cub_path(a)),
                trg_img_path=osp.join(root, 'images', _cub_path(b)),
                src_imsize=CUB_IMAGES[a][2], trg_imsize=CUB_IMAGES[b][2],
                src_kps=_f32([CUB_IMAGES[a][4][p] for p in common]),
                trg_kps=_f32([CUB_IMAGES[b][4][p] for p in common]),
                kps_ids=common, src_bbox=[x, y, x + w, y + h], trg_bbox=[u, v, u + s, v + t],
                difficulty={}))
    return dict(root=root, pairs=pairs)
