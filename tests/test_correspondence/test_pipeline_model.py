"""The evaluation path of correspondence/ end to end: pair transforms, CorrespondenceModel, and
``tools/test.py CONFIG`` (zero-shot, no checkpoint) on a fake SPair-71k release.

The model is exercised with a content-based test extractor (each pixel's descriptor is its 3 x 3
RGB patch): on a pair whose target is the source image, the best match of every source keypoint
is the keypoint itself, so the prediction must equal the ground truth exactly (PCK 100) through
the dataset, the pipeline, the frames and the mapping back.
"""
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import nn

from correspondence.datasets import CorrespondenceDataError, SPair71kDataset
from correspondence.datasets.transforms import (LoadImagePair, PackPair, ResizePair,
                                                pair_collate)
from correspondence.evaluation import PCKMetric
from correspondence.geometry import FrameTransform, frame_transform
from correspondence.models.correspondence_model import CorrespondenceModel

from .fake_releases import SPAIR_IMAGES, write_spair

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(REPO_ROOT, 'correspondence', 'configs', 'zero_shot',
                  'pixels_softargmax_spair71k.py')
CONTRACT_FIELDS = ('pair_id', 'category', 'src_img_path', 'trg_img_path', 'src_imsize',
                   'trg_imsize', 'src_kps', 'trg_kps', 'kps_ids', 'src_bbox', 'trg_bbox',
                   'difficulty', 'src_pose', 'trg_pose')
IDENTITY_ID = '000099-2008_000001-2008_000001:aeroplane'


@MODELS.register_module(force=True)
class _PatchTestExtractor(nn.Module):
    """Test-only: the 3 x 3 RGB patch around each pixel as its descriptor ([B, 27, H, W])."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, images, categories=None):
        self.calls.append((tuple(images.shape), list(categories or [])))
        padded = F.pad(images - 0.5, (1, 1, 1, 1), mode='replicate')  # centred: cosine ~ 0
        b, c, h, w = images.shape                                   # between unlike patches
        return F.unfold(padded, 3).view(b, c * 9, h, w) + 1e-3  # no all-zero descriptor


GRADIENT_ID = '000098-2008_000098-2008_000098:aeroplane'


def _add_pair(root, pair_id, imname, size, box, points):
    """One more SPair-71k test pair, source and target both the image ``imname``."""
    cat = pair_id.rsplit(':', 1)[1]
    ann = dict(pair_id=int(pair_id[:6]), src_imname=imname, trg_imname=imname,
               src_imsize=[*size, 3], trg_imsize=[*size, 3], src_bndbox=box, trg_bndbox=box,
               category=cat, src_pose='Left', trg_pose='Left', src_kps=points, trg_kps=points,
               kps_ids=[str(i) for i in range(len(points))], viewpoint_variation=0,
               scale_variation=0, truncation=0, occlusion=0, mirror=0, filename=pair_id)
    with open(osp.join(root, 'PairAnnotation', 'test', pair_id + '.json'), 'w') as f:
        json.dump(ann, f)


@pytest.fixture(scope='module')
def spair(tmp_path_factory):
    """The fake SPair-71k release plus two pairs whose target is their source image: one of the
    release's noise images, and a colour ramp (R = x, G = y, B constant) on which even raw
    pixels (``PixelExtractor``) identify every position."""
    from PIL import Image
    written = write_spair(str(tmp_path_factory.mktemp('releases')))
    root = written['root']
    cat, size, box, kps, _ = SPAIR_IMAGES['2008_000001']
    _add_pair(root, IDENTITY_ID, '2008_000001.jpg', size, box, [list(kps[i]) for i in sorted(kps)])
    w, h = size
    ys, xs = np.mgrid[0:h, 0:w]
    ramp = np.stack([40 + 200 * xs / (w - 1), 40 + 200 * ys / (h - 1), np.full_like(xs, 128)], -1)
    Image.fromarray(ramp.round().astype(np.uint8)).save(
        osp.join(root, 'JPEGImages', cat, '2008_000098.jpg'), quality=100)
    _add_pair(root, GRADIENT_ID, '2008_000098.jpg', size, box, [[5, 6], [20, 15], [33, 24]])
    return written


def _dataset(spair, pipeline):
    return SPair71kDataset(data_root=spair['root'], split='test', pipeline=pipeline)


def _pipeline(frame='original', size=None):
    return [dict(type='LoadImagePair'), dict(type='ResizePair', frame=frame, size=size),
            dict(type='PackPair')]


def _model(matcher=dict(type='ArgmaxMatcher')):
    return CorrespondenceModel(extractor=dict(type='_PatchTestExtractor'), matcher=matcher).eval()


def _predict(model, dataset, indices):
    batch = pair_collate([dataset[i] for i in indices])
    with torch.no_grad():
        return model.test_step(batch)


def _index(dataset, pair_id):
    return [dataset.get_data_info(i)['pair_id'] for i in range(len(dataset))].index(pair_id)


# ----------------------------------------------------------------------------- transforms

@pytest.mark.parametrize('frame,size', [('original', None), ('stretched', 64),
                                        ('stretched', (50, 20)), ('padded', 48)])
def test_resize_pair_records_frames_that_round_trip(spair, frame, size):
    dataset = _dataset(spair, [dict(type='LoadImagePair')])
    results = ResizePair(frame=frame, size=size)(dataset[0])
    pair = spair['pairs']['test'][0]
    for side in ('src', 'trg'):
        imsize = pair[f'{side}_imsize']
        expected = frame_transform(imsize, frame, size)
        recorded = results[f'{side}_frame']
        assert recorded == dict(scale=expected.scale, offset=expected.offset,
                                size=expected.size)
        image = results[f'{side}_img']
        assert image.dtype == np.uint8 and image.shape == (expected.size[1], expected.size[0], 3)
        transform = FrameTransform(**recorded)
        kps = pair[f'{side}_kps']
        back = transform.from_frame(transform.to_frame(kps)).numpy()
        np.testing.assert_allclose(back, kps, atol=1e-5)
        np.testing.assert_array_equal(results[f'{side}_kps'], kps)  # kps stay original
    if frame == 'padded':  # 40 x 30 source in 48 x 48: rows above and below are padding
        ox, oy = (int(v) for v in results['src_frame']['offset'])
        assert (ox, oy) == (0, 6)
        assert not results['src_img'][:oy].any() and not results['src_img'][oy + 36:].any()
        assert results['src_img'][oy:oy + 36].any()


def test_load_image_pair_errors_name_the_file(tmp_path, spair):
    info = dict(SPair71kDataset(data_root=spair['root']).get_data_info(0))
    missing = str(tmp_path / 'gone.jpg')
    with pytest.raises(CorrespondenceDataError, match='gone.jpg: expected an image') as err:
        LoadImagePair()(dict(info, trg_img_path=missing))
    assert 'data_root' in str(err.value) and '\n' not in str(err.value)
    corrupt = tmp_path / 'corrupt.jpg'
    corrupt.write_bytes(b'\xff\xd8 not a jpeg at all')
    with pytest.raises(CorrespondenceDataError, match='corrupt.jpg: expected a readable image'):
        LoadImagePair()(dict(info, src_img_path=str(corrupt)))
    with pytest.raises(ValueError, match='needs size'):
        ResizePair(frame='padded')
    with pytest.raises(ValueError, match='square'):
        ResizePair(frame='padded', size=(40, 30))


def test_pack_pair_carries_the_contract_and_collates(spair):
    dataset = _dataset(spair, _pipeline())
    packed = dataset[0]
    assert set(packed) == {'inputs', 'data_samples'}
    src = packed['inputs']['src']
    assert src.dtype == torch.uint8 and tuple(src.shape) == (3, 30, 40)
    sample = packed['data_samples']
    assert set(CONTRACT_FIELDS) <= set(sample)
    assert sample['src_frame'] == dict(scale=(1.0, 1.0), offset=(0.0, 0.0), size=(40, 30))
    assert 'src_img' not in sample and 'trg_img' not in sample
    # without ResizePair the original frames are recorded all the same
    raw = PackPair()(LoadImagePair()(dict(dataset.get_data_info(0))))
    assert raw['data_samples']['trg_frame']['size'] == (36, 32)
    # same sizes are stacked, different sizes stay a list
    stacked = pair_collate([_dataset(spair, _pipeline('stretched', 32))[i] for i in (0, 1)])
    assert tuple(stacked['inputs']['src'].shape) == (2, 3, 32, 32)
    assert isinstance(stacked['data_samples'], list) and len(stacked['data_samples']) == 2
    mixed = pair_collate([dataset[0], dataset[1]])
    assert tuple(mixed['inputs']['src'].shape) == (2, 3, 30, 40)  # both sources 2008_000001
    assert isinstance(mixed['inputs']['trg'], list)  # 36 x 32 and 32 x 32 targets


# ----------------------------------------------------------------------------- the model

@pytest.mark.parametrize('frame,size', [('original', None), ('stretched', (80, 60)),
                                        ('padded', 80)])
def test_identity_pair_predicts_the_ground_truth_exactly(spair, frame, size):
    dataset = _dataset(spair, _pipeline(frame, size))
    index = _index(dataset, IDENTITY_ID)
    model = _model()
    (out, ) = _predict(model, dataset, [index])
    assert out['pair_id'] == IDENTITY_ID
    assert out['pred_kps'].dtype == np.float32 and out['pred_kps'].shape == (4, 2)
    np.testing.assert_array_equal(out['pred_kps'], out['trg_kps'])
    # one extractor call for source and target, with the categories
    (shape, categories), = model.extractor.calls
    assert shape[0] == 2 and categories == ['aeroplane', 'aeroplane']


def test_identity_pair_soft_argmax_scores_pck_100(spair):
    dataset = _dataset(spair, _pipeline())
    model = _model(dict(type='SoftArgmaxMatcher', window=3, beta=0.01))
    outputs = _predict(model, dataset, [_index(dataset, IDENTITY_ID)])
    np.testing.assert_allclose(outputs[0]['pred_kps'], outputs[0]['trg_kps'], atol=1e-3)
    metric = PCKMetric(presets=['dift', 'sd_dino'], alphas=(0.01, ), per_category=False)
    metric.dataset_meta = dataset.metainfo
    metric.process({}, outputs)
    values = metric.compute_metrics(metric.results)
    assert values and all(v == 100.0 for v in values.values()), values


def test_pairs_with_different_k_in_one_batch_match_pair_by_pair(spair):
    dataset = _dataset(spair, _pipeline('stretched', 32))
    ids = [p['pair_id'] for p in spair['pairs']['test']]
    indices = [_index(dataset, i) for i in ids]
    model = _model(dict(type='SoftArgmaxMatcher', window=2, beta=0.05))
    batched = _predict(model, dataset, indices)
    assert [len(o['pred_kps']) for o in batched] == [3, 3, 2, 2]
    assert model.extractor.calls[0][0] == (8, 3, 32, 32)  # one call: 4 src + 4 trg
    for index, out in zip(indices, batched):
        (single, ) = _predict(model, dataset, [index])
        assert out['pair_id'] == single['pair_id']
        assert np.isfinite(out['pred_kps']).all()
        np.testing.assert_allclose(out['pred_kps'], single['pred_kps'], atol=1e-4)
    # original frames of different sizes: pair by pair, mapped to original target pixels
    raw = _dataset(spair, _pipeline())
    mixed = _predict(model, raw, [_index(raw, i) for i in ids])
    for out, pair in zip(mixed, spair['pairs']['test']):
        w, h = pair['trg_imsize']
        assert out['pred_kps'].shape == pair['trg_kps'].shape
        assert (out['pred_kps'] >= -0.5).all() and (out['pred_kps'] <= [w - 0.5, h - 0.5]).all()


def test_loss_mode_points_at_the_distilldift_work(spair):
    model = _model()
    batch = model.data_preprocessor(pair_collate([_dataset(spair, _pipeline())[0]]))
    with pytest.raises(NotImplementedError, match='DistillDIFT.*issue #8'):
        model(**batch, mode='loss')
    src_feats, trg_feats = model(**batch, mode='tensor')
    assert src_feats[0].shape[-2:] == (30, 40)


# ----------------------------------------------------------------------------- tools/test.py

def _recompute(dump, name, alpha, averaging):
    """One number of a protocol from the dumped per-pair distances and thresholds (percent)."""
    rows = []
    for pair in dump['pairs']:
        proto = pair['protocols'][name]
        dist = np.asarray(proto['distances'], dtype=np.float64)
        thr = proto['thresholds'][f'pck@{alpha:g}']
        correct = dist <= thr if proto['compare'] == '<=' else dist < thr
        rows.append((pair['category'], correct))
    if averaging == 'per_point':
        return 100 * sum(c.sum() for _, c in rows) / sum(c.size for _, c in rows)
    if averaging == 'per_image':
        return 100 * np.mean([c.mean() for _, c in rows])
    cats = {}
    for cat, c in rows:
        cats.setdefault(cat, []).append(c)
    per_cat = {cat: np.concatenate(cs).mean() for cat, cs in cats.items()}
    if averaging == 'category_mean':
        return 100 * np.mean(list(per_cat.values()))
    weights = {cat: len(cs) for cat, cs in cats.items()}
    return 100 * sum(per_cat[c] * weights[c] for c in cats) / sum(weights.values())


def test_zero_shot_config_end_to_end(spair, tmp_path):
    out = tmp_path / 'pairs.json'
    env = dict(os.environ, HF_HUB_OFFLINE='1', PYTHONPATH=REPO_ROOT)
    env.pop('DIFFTEACHER_TRACEBACK', None)
    proc = subprocess.run(
        [sys.executable, osp.join(REPO_ROOT, 'tools', 'test.py'), CONFIG, '--work-dir',
         str(tmp_path / 'wd'), '--out', str(out), '--cfg-options',
         f'test_dataloader.dataset.data_root={spair["root"]}', 'test_dataloader.num_workers=0',
         'test_dataloader.batch_size=2'],
        cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert 'no CHECKPOINT given: the model is evaluated as configured (zero-shot' in output
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith('Test metrics: ')][-1]
    printed = json.loads(line[len('Test metrics: '):])
    dump = json.loads(out.read_text())
    assert dump['metrics'] == printed
    assert len(dump['pairs']) == 6 and set(dump['protocols']) == {'dift', 'sd_dino'}
    # raw pixels find the colour ramp's points (and little else): the numbers are not all 0
    ramp = [p for p in dump['pairs'] if p['pair_id'] == GRADIENT_ID][0]
    np.testing.assert_allclose(ramp['pred_kps'], ramp['trg_kps'], atol=1.0)
    assert 0 < printed['dift/pck@0.1/per_point'] < 100
    expected_keys = {'dift/pck@0.1/per_image', 'dift/pck@0.1/per_point',
                     'sd_dino/pck@0.1/category_mean', 'sd_dino/pck@0.1/category_weighted'}
    assert expected_keys <= set(printed)
    for key in expected_keys:
        name, alpha, averaging = key.split('/')
        value = _recompute(dump, name, float(alpha[len('pck@'):]), averaging)
        assert printed[key] == pytest.approx(value, abs=1e-9), key
