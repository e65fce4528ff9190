"""The semantic-vs-spatial benchmark end to end: the PASCAL-Part builder, the reader, the metric,
and ``tools/test.py`` on its config.

A tiny fake PASCAL-Part release is written with ``scipy.io.savemat`` in the layout the builder
documents: four 48 x 32 images, each with one subject whose parts are rectangles at known places,
painted one colour per part *name* (the same colour in every image) on grey. So the expected
keypoints are hand-computed centroids, and raw pixels are a matcher with a known answer: on a
mirrored pair the colour of the source's left eye sits on the flipped image's *right* eye (pixels
ignore which side a part is on: 100 % spatial), on a cross pair it sits on the other subject's
left eye (100 % semantic).
"""
import importlib.util
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
from scipy.io import savemat

from correspondence.datasets.disentangled import (DISENTANGLED_CLASSES,
                                                  DisentangledPairsDataset, counterpart,
                                                  rle_decode, rle_encode, side_of)
from correspondence.evaluation.disentangled_metric import DisentangledMetric, inside

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(REPO_ROOT, 'tools', 'dataset_converters', 'pascal_part_disentangled.py')
CONFIG = osp.join(REPO_ROOT, 'correspondence', 'configs', 'disentangled',
                  'dinov2_vitb14_840px_pascal-part-disentangled.py')
W, H = 48, 32
COLOURS = dict(leye=(255, 0, 0), reye=(0, 255, 0), lleg=(0, 0, 255), rleg=(255, 255, 0),
               lear=(255, 0, 255), rear=(0, 255, 255), lfuleg=(255, 128, 0),
               rfuleg=(128, 0, 255), torso=(128, 128, 128), head=(128, 128, 128),
               lhand=(0, 128, 64))
# image id -> [(class, {part: (x0, x1, y0, y1) inclusive})]; left parts at larger x = frontal
IMAGES = {
    '2008_000001': [('person', dict(leye=(34, 37, 3, 6), reye=(26, 29, 3, 6),
                                    lleg=(33, 36, 20, 29), rleg=(25, 28, 20, 29),
                                    torso=(25, 36, 10, 18), lhand=(38, 39, 10, 13)))],
    '2008_000002': [('person', dict(lleg=(8, 11, 18, 29), rleg=(16, 19, 18, 29),
                                    lear=(8, 10, 2, 5), rear=(17, 19, 2, 5),
                                    torso=(8, 19, 8, 16)))],
    '2009_000003': [('cow', dict(leye=(30, 33, 4, 7), reye=(18, 21, 4, 7),
                                 lfuleg=(28, 31, 16, 27), rfuleg=(16, 19, 16, 27))),
                    ('person', dict(head=(2, 6, 2, 6)))],  # no sided part: no subject
    '2009_000004': [('cow', dict(leye=(8, 11, 4, 7), reye=(20, 23, 4, 7),
                                 lfuleg=(6, 9, 16, 27), rfuleg=(22, 25, 16, 27)))],
}
CLASS_IND = dict(person=15, cow=10)


def _rect(box):
    x0, x1, y0, y1 = box
    mask = np.zeros((H, W), np.uint8)
    mask[y0:y1 + 1, x0:x1 + 1] = 1
    return mask


def _struct(records, fields):
    """A 1 x N MATLAB struct array for savemat."""
    arr = np.empty((1, len(records)), dtype=[(f, 'O') for f in fields])
    for i, record in enumerate(records):
        for f in fields:
            arr[0, i][f] = record[f]
    return arr


def write_pascal_part(root):
    """Annotations_Part/<id>.mat and JPEGImages/<id>.jpg of :data:`IMAGES`."""
    from PIL import Image
    os.makedirs(osp.join(root, 'Annotations_Part'))
    os.makedirs(osp.join(root, 'JPEGImages'))
    for imname, objects in IMAGES.items():
        image = np.full((H, W, 3), 60, np.uint8)  # grey: JPEG noise keeps its hue
        records = []
        for cls, parts in objects:
            masks = {name: _rect(box) for name, box in parts.items()}
            for name, mask in masks.items():
                image[mask > 0] = COLOURS[name]
            records.append({'class': cls, 'class_ind': CLASS_IND[cls],
                            'mask': np.maximum.reduce(list(masks.values())),
                            'parts': _struct([dict(part_name=n, mask=m) for n, m in masks.items()],
                                             ('part_name', 'mask'))})
        anno = dict(imname=imname, objects=_struct(records, ('class', 'class_ind', 'mask',
                                                             'parts')))
        savemat(osp.join(root, 'Annotations_Part', imname + '.mat'), dict(anno=anno))
        Image.fromarray(image).save(osp.join(root, 'JPEGImages', imname + '.jpg'), quality=100,
                                  subsampling=0)
    return osp.join(root, 'JPEGImages')


def _load_tool():
    spec = importlib.util.spec_from_file_location('pascal_part_disentangled', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def tool():
    return _load_tool()


@pytest.fixture(scope='module')
def built(tmp_path_factory, tool):
    root = str(tmp_path_factory.mktemp('pascal'))
    jpeg = write_pascal_part(root)
    out = osp.join(root, 'disentangled')
    code = tool._cli.run_cli(tool.PROG, tool.main, [root, jpeg, out, '--min-part-pixels', '10'])
    assert code == 0
    return dict(root=root, jpeg=jpeg, out=out)


def _pairs(out):
    folder = osp.join(out, 'PairAnnotation', 'test')
    pairs = {}
    for name in sorted(os.listdir(folder)):
        with open(osp.join(folder, name)) as f:
            ann = json.load(f)
        pairs[(ann['kind'], ann['src_imname'], ann['trg_imname'])] = ann
    return pairs


def _centre(box):
    x0, x1, y0, y1 = box
    return [(x0 + x1) / 2, (y0 + y1) / 2]


# ----------------------------------------------------------------------------- format helpers

def test_rle_is_coco_column_major_and_round_trips():
    assert rle_encode(np.array([[0, 1], [1, 1]])) == dict(size=[2, 2], counts=[1, 3])
    assert rle_encode(np.array([[1, 0], [0, 0]])) == dict(size=[2, 2], counts=[0, 1, 3])
    mask = np.random.default_rng(0).random((7, 5)) > 0.6
    np.testing.assert_array_equal(rle_decode(rle_encode(mask)), mask)
    with pytest.raises(ValueError, match='a 2x2 mask needs 4'):
        rle_decode(dict(size=[2, 2], counts=[1, 2]))


def test_part_sides_and_counterparts():
    assert [counterpart(n) for n in ('leye', 'rear', 'lfho', 'leftmirror', 'hrightside',
                                     'cleftside_2', 'head')] == \
        ['reye', 'lear', 'rfho', 'rightmirror', 'hleftside', 'crightside_2', None]
    assert [side_of(n) for n in ('lear', 'rear', 'rightmirror', 'cleftside_1')] == \
        ['left', 'right', 'right', 'left']
    assert tuple(_load_tool().CLASSES) == DISENTANGLED_CLASSES  # the tool's copy, kept equal


# ----------------------------------------------------------------------------- the builder

def test_builder_writes_the_expected_pairs(built):
    pairs = _pairs(built['out'])
    assert sorted(k[0] for k in pairs) == ['cross'] * 4 + ['mirrored'] * 4
    with open(osp.join(built['out'], 'meta.json')) as f:
        meta = json.load(f)
    assert meta['counts'] == dict(person=dict(mirrored=2, cross=2), cow=dict(mirrored=2, cross=2))
    assert meta['part_names']['person'] == ['lear', 'leye', 'lleg', 'rear', 'reye', 'rleg']

    # mirrored: the source against its flip; lhand (8 px, no rhand) and torso have no pair
    parts = IMAGES['2008_000001'][0][1]
    ann = pairs[('mirrored', '2008_000001.jpg', '2008_000001_flip.png')]
    assert ann['kps_names'] == ['leye', 'lleg', 'reye', 'rleg']
    assert ann['trg_spatial_names'] == ['reye', 'rleg', 'leye', 'lleg']
    assert ann['src_kps'] == [_centre(parts[n]) for n in ann['kps_names']]
    assert ann['src_kps'][0] == [35.5, 4.5]
    # spatial target: the source point's own pixels, x -> W - 1 - x
    assert ann['trg_spatial_kps'] == [[W - 1 - x, y] for x, y in ann['src_kps']]
    # semantic target: the mirrored subject's left eye is the mirror of the source's right eye
    assert ann['trg_kps'][0] == [W - 1 - 27.5, 4.5]
    masks = {n: rle_decode(r) for n, r in ann['trg_part_masks'].items()}
    np.testing.assert_array_equal(masks['leye'], np.fliplr(_rect(parts['reye'])) > 0)
    np.testing.assert_array_equal(masks['reye'], np.fliplr(_rect(parts['leye'])) > 0)
    for k, (name, spatial) in enumerate(zip(ann['kps_names'], ann['trg_spatial_names'])):
        assert inside(ann['trg_kps'][k], masks[name])[0]
        assert inside(ann['trg_spatial_kps'][k], masks[spatial])[0]
        assert not inside(ann['trg_kps'][k], masks[spatial])[0]
    assert ann['src_bndbox'] == [25, 3, 39, 29] and ann['trg_bndbox'] == [8, 3, 22, 29]
    assert (ann['mirror'], ann['src_layout'], ann['trg_layout']) == (1, 1, -1)

    # the flipped image is the exact mirror of the source as decoded
    from PIL import Image
    folder = osp.join(built['out'], 'JPEGImages', 'person')
    src = np.asarray(Image.open(osp.join(folder, '2008_000001.jpg')).convert('RGB'))
    trg = np.asarray(Image.open(osp.join(folder, '2008_000001_flip.png')))
    np.testing.assert_array_equal(trg, src[:, ::-1])
    with open(osp.join(folder, '2008_000001.jpg'), 'rb') as a, \
            open(osp.join(built['jpeg'], '2008_000001.jpg'), 'rb') as b:
        assert a.read() == b.read()  # copied byte for byte

    # cross: frontal person -> back-view person; only the legs are in both
    ann = pairs[('cross', '2008_000001.jpg', '2008_000002.jpg')]
    other = IMAGES['2008_000002'][0][1]
    assert ann['kps_names'] == ['lleg', 'rleg']
    assert ann['trg_kps'] == [_centre(other['lleg']), _centre(other['rleg'])]
    assert ann['trg_spatial_kps'] == [_centre(other['rleg']), _centre(other['lleg'])]
    assert (ann['src_layout'], ann['trg_layout'], ann['mirror']) == (1, -1, 0)
    assert ('cross', '2008_000002.jpg', '2008_000001.jpg') in pairs


def test_max_pairs_and_kinds_and_classes(tmp_path, built, tool):
    out = str(tmp_path / 'one')
    meta = tool.build(built['root'], built['jpeg'], out, classes=('cow', ), kinds=('cross', ),
                      max_pairs=1, min_part_pixels=10, log=lambda msg: None)
    assert meta['counts'] == dict(cow=dict(mirrored=0, cross=1)) and meta['pairs'] == 1
    again = tool.build(built['root'], built['jpeg'], str(tmp_path / 'two'), classes=('cow', ),
                       kinds=('cross', ), max_pairs=1, min_part_pixels=10, log=lambda msg: None)
    assert again == meta and os.listdir(osp.join(out, 'PairAnnotation', 'test')) == \
        os.listdir(str(tmp_path / 'two' / 'PairAnnotation' / 'test'))  # seeded
    ids = tmp_path / 'val.txt'
    ids.write_text('2009_000003\n2009_000004\n')
    code = tool._cli.run_cli(tool.PROG, tool.main, [built['root'], built['jpeg'],
                                                    str(tmp_path / 'ids'), '--ids', str(ids),
                                                    '--min-part-pixels', '10'])
    with open(tmp_path / 'ids' / 'meta.json') as f:
        assert code == 0 and json.load(f)['counts'] == dict(cow=dict(mirrored=2, cross=2))


def _run_tool(tool, capsys, argv):
    code = tool._cli.run_cli(tool.PROG, tool.main, argv)
    return code, capsys.readouterr().err.strip().splitlines()


def test_malformed_mat_is_one_paragraph_and_writes_nothing(tmp_path, built, tool, capsys):
    root = tmp_path / 'bad'
    (root / 'Annotations_Part').mkdir(parents=True)
    out = str(tmp_path / 'out')
    bad = root / 'Annotations_Part' / '2008_000009.mat'
    bad.write_bytes(b'not a MATLAB file')
    code, lines = _run_tool(tool, capsys, [str(root), built['jpeg'], out])
    assert code == 1 and len(lines) == 1, lines
    assert '2008_000009.mat: expected a PASCAL-Part annotation' in lines[0]
    assert 'scipy.io.loadmat cannot read it' in lines[0] and '--skip-malformed' in lines[0]
    assert not osp.exists(out)

    savemat(str(bad), dict(annotation=dict(imname='x')))
    code, lines = _run_tool(tool, capsys, [str(root), built['jpeg'], out])
    assert code == 1 and 'anno is malformed (no variable anno (found [\'annotation\']))' in lines[0]

    part = _struct([dict(part_name='leye', mask=np.ones((3, 3), np.uint8))], ('part_name', 'mask'))
    obj = _struct([{'class': 'person', 'class_ind': 15, 'mask': np.ones((H, W), np.uint8),
                    'parts': part}], ('class', 'class_ind', 'mask', 'parts'))
    savemat(str(bad), dict(anno=dict(imname='2008_000009', objects=obj)))
    code, lines = _run_tool(tool, capsys, [str(root), built['jpeg'], out])
    assert code == 1 and 'anno.objects(1).parts(1) is malformed (mask of shape (3, 3), the ' \
        "object's is (32, 48))" in lines[0]
    # skipped on request: then nothing is left to build from
    code, lines = _run_tool(tool, capsys, [str(root), built['jpeg'], out, '--skip-malformed'])
    assert code == 1 and lines[0].startswith('WARNING skipped:')
    assert 'no pair could be built from 1 annotation files' in lines[-1]
    assert not osp.exists(out)
    # an existing output folder is refused before any reading
    code, lines = _run_tool(tool, capsys, [built['root'], built['jpeg'], built['out']])
    assert code == 1 and 'already exists' in lines[0] and '--overwrite' in lines[0]


def test_argument_errors_are_one_line(tool, capsys):
    with pytest.raises(SystemExit) as err:
        tool.parse_args(['pp', 'jpeg', 'out', '--max-pairs', '0'])
    assert err.value.code == 2
    assert capsys.readouterr().err.strip() == (
        f'{tool.PROG}: error: --max-pairs 0: use a positive number of pairs per class and '
        f'kind; see {tool.PROG} --help')


# ----------------------------------------------------------------------------- reader + metric

def _oracle(dataset, key):
    return [dict(dataset.get_data_info(i), pred_kps=dataset.get_data_info(i)[key])
            for i in range(len(dataset))]


def _evaluate(samples, **kwargs):
    metric = DisentangledMetric(**kwargs)
    metric.process({}, samples)
    return metric.compute_metrics(metric.results)


def test_reader_gives_the_contract_and_the_spatial_targets(built):
    dataset = DisentangledPairsDataset(data_root=built['out'], kinds='mirrored',
                                       categories=['person'])
    assert len(dataset) == 2
    info = dataset.get_data_info(0)
    assert info['kind'] == 'mirrored' and info['category'] == 'person'
    assert info['src_kps'].dtype == np.float32 and info['trg_spatial_kps'].shape == (4, 2)
    assert info['trg_img_path'].endswith(osp.join('person', '2008_000001_flip.png'))
    assert info['difficulty'] == dict(mirror=1)
    assert len(DisentangledPairsDataset(data_root=built['out'])) == 8
    with pytest.raises(ValueError, match=r"kinds=\('flipped',\): the pair kinds are"):
        DisentangledPairsDataset(data_root=built['out'], kinds='flipped')
    with pytest.raises(ValueError, match=r"categories \['persn'\] are not classes"):
        DisentangledPairsDataset(data_root=built['out'], categories=['persn'])


@pytest.mark.parametrize('criterion', ['mask', 'distance', 'mask_or_distance'])
def test_oracles_score_exactly_100_and_0(built, criterion):
    dataset = DisentangledPairsDataset(data_root=built['out'])
    semantic = _evaluate(_oracle(dataset, 'trg_kps'), criterion=criterion, alpha=0.05)
    spatial = _evaluate(_oracle(dataset, 'trg_spatial_kps'), criterion=criterion, alpha=0.05)
    for group in ('all', 'mirrored', 'cross', 'mirrored/person', 'cross/cow'):
        assert (semantic[f'{group}/semantic'], semantic[f'{group}/spatial']) == (100, 0), group
        assert (spatial[f'{group}/semantic'], spatial[f'{group}/spatial']) == (0, 100), group
        assert semantic[f'{group}/ratio'] == float('inf') and spatial[f'{group}/ratio'] == 0
    # 4 mirrored pairs of 4 keypoints + person cross 2 x 2 + cow cross 2 x 4
    assert semantic['all/keypoints'] == 28 and semantic['cross/keypoints'] == 12


def test_predicting_the_mirrored_position_is_spatial_on_mirrored_pairs(built):
    dataset = DisentangledPairsDataset(data_root=built['out'], kinds=['mirrored'])
    samples = []
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        w = info['src_imsize'][0]
        samples.append(dict(info, pred_kps=np.stack([w - 1 - info['src_kps'][:, 0],
                                                     info['src_kps'][:, 1]], -1)))
    result = _evaluate(samples)
    assert (result['mirrored/semantic'], result['mirrored/spatial']) == (0, 100)


def test_metric_counts_by_hand():
    mask_a = np.zeros((10, 20), bool)
    mask_a[2:4, 2:6] = True     # semantic part: x 2..5, y 2..3
    mask_b = np.zeros((10, 20), bool)
    mask_b[2:4, 12:16] = True   # spatial part: x 12..15
    masks = dict(leye=rle_encode(mask_a), reye=rle_encode(mask_b))
    base = dict(category='cow', trg_imsize=(20, 10), trg_bbox=[0, 0, 19, 9],
                kps_names=['leye'] * 5, trg_spatial_names=['reye'] * 5,
                trg_kps=[[3.5, 2.5]] * 5, trg_spatial_kps=[[13.5, 2.5]] * 5,
                trg_part_masks=masks)
    # in A; in B; neither; just outside A (x 5.5 rounds to 6); outside the image
    pred = [[2.0, 3.0], [15.0, 2.6], [9.0, 5.0], [5.5, 2.0], [-3.0, 2.0]]
    mirrored = dict(base, pair_id='a', kind='mirrored', pred_kps=pred)
    result = _evaluate([mirrored, dict(base, pair_id='b', kind='cross', pred_kps=[[3, 3]] * 5)])
    assert result['mirrored/semantic'] == pytest.approx(20) and \
        result['mirrored/spatial'] == pytest.approx(20)
    assert result['mirrored/neither'] == pytest.approx(60) and result['mirrored/both'] == 0
    assert result['mirrored/ratio'] == 1 and result['mirrored/semantic_share'] == 50
    assert result['all/semantic'] == pytest.approx(60) and result['all/keypoints'] == 10
    assert result['cross/cow/semantic'] == 100
    # distance: alpha * max(19, 9) = 1.9 (<=): [5.5, 2] is 2.06 from [3.5, 2.5], [2, 3] 1.58,
    # [15, 2.6] 1.50 from [13.5, 2.5]
    result = _evaluate([mirrored], criterion='distance', alpha=0.1)
    assert result['all/semantic'] == pytest.approx(20) and result['all/spatial'] == 20
    result = _evaluate([dict(mirrored, pred_kps=[[5.875, 2.5]] * 5)], criterion='distance',
                       alpha=0.125)
    assert result['all/semantic'] == 100  # exactly 0.125 * 19 = 2.375 away: <=
    with pytest.raises(ValueError, match="criterion='inside' is not one of"):
        DisentangledMetric(criterion='inside')
    with pytest.raises(ValueError, match=r"pair 'a' has no \['trg_spatial_kps'\]"):
        _evaluate([dict(mirrored, trg_spatial_kps=None)])


# ----------------------------------------------------------------------------- tools/test.py

def test_config_end_to_end_with_pixels(built, tmp_path):
    """The config through tools/test.py with raw pixels for DINOv2 (original frame): colours
    ignore sides, so mirrored pairs are 100 % spatial and cross pairs 100 % semantic."""
    child = tmp_path / 'pixels_pascal-part-disentangled.py'
    child.write_text(
        f'_base_ = [{CONFIG!r}]\n'
        "model = dict(extractor=dict(_delete_=True, type='PixelExtractor'))\n"
        "test_pipeline = [dict(type='LoadImagePair'), dict(type='ResizePair', frame='original'),"
        " dict(type='PackPair')]\n"
        f'test_dataloader = dict(num_workers=0, dataset=dict(data_root={built["out"]!r}, '
        'pipeline=test_pipeline))\n')
    out = tmp_path / 'pairs.json'
    env = dict(os.environ, HF_HUB_OFFLINE='1', PYTHONPATH=REPO_ROOT)
    env.pop('DIFFTEACHER_TRACEBACK', None)
    proc = subprocess.run(
        [sys.executable, osp.join(REPO_ROOT, 'tools', 'test.py'), str(child), '--work-dir',
         str(tmp_path / 'wd'), '--out', str(out)],
        cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert 'Semantic vs spatial correspondence (criterion mask)' in output
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith('Test metrics: ')][-1]
    printed = json.loads(line[len('Test metrics: '):])
    assert (printed['disentangled/mirrored/semantic'],
            printed['disentangled/mirrored/spatial']) == (0, 100)
    assert (printed['disentangled/cross/semantic'],
            printed['disentangled/cross/spatial']) == (100, 0)
    assert 'dift/pck@0.1/per_point' in printed
    dump = json.loads(out.read_text())
    assert dump['metrics'] == printed and len(dump['pairs']) == 8
    verdicts = [v for p in dump['pairs'] for v in p['spatial']]
    assert 100 * np.mean(verdicts) == pytest.approx(printed['disentangled/all/spatial'])
