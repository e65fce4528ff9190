"""The digits correspondence demo: exact ground truth, an SPair-71k-format release that reads
back through the real reader, and a tiny end-to-end run of ``tools/demo_correspondence.py``."""
import json
import os.path as osp

import numpy as np
import pytest

from correspondence.datasets import SPair71kDataset
from correspondence.datasets.digits_affine import (DIGIT_CLASSES, apply_affine, make_affine_pair,
                                                   random_affine, warp_image,
                                                   write_spair_release)
from tests.helpers.tiny_models import save_ddpm_pipeline


def _bright_pixel(x, y, size=64):
    image = np.zeros((size, size))
    image[y, x] = 255.0
    return image


def test_warp_moves_a_pixel_exactly_where_the_keypoint_goes():
    # a quarter turn plus an integer shift permutes pixels: the bright pixel lands on the
    # mapped keypoint exactly, with its full value
    A = np.array([[0.0, -1.0], [1.0, 0.0]])
    b = np.array([50.0, 3.0])
    warped = warp_image(_bright_pixel(20, 30), A, b)
    x, y = apply_affine([[20, 30]], A, b)[0]
    assert (x, y) == (20.0, 23.0)
    assert np.unravel_index(np.argmax(warped), warped.shape) == (23, 20)  # (row, col)
    assert warped[23, 20] == pytest.approx(255.0)
    assert warped.sum() == pytest.approx(255.0)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_warp_of_a_random_affine_is_centred_on_the_mapped_keypoint(seed):
    # bilinear sampling spreads the pixel over its neighbours; their intensity-weighted centre is
    # the mapped keypoint (a sign or half-pixel slip would be off by 0.5 px or more)
    rng = np.random.default_rng(seed)
    A, b = random_affine(rng, 64)
    warped = warp_image(_bright_pixel(30, 34), A, b)
    ys, xs = np.nonzero(warped)
    w = warped[ys, xs]
    centre = np.array([(xs * w).sum(), (ys * w).sum()]) / w.sum()
    np.testing.assert_allclose(centre, apply_affine([[30, 34]], A, b)[0], atol=0.15)


def test_pair_keypoints_are_on_strokes_and_inside():
    digit8 = np.zeros((8, 8))
    digit8[1:7, 3:5] = 16  # a "1"
    pair = make_affine_pair(digit8, np.random.default_rng(0))
    assert len(pair['src_kps']) == len(pair['trg_kps']) > 0
    xs, ys = pair['src_kps'].astype(int).T
    assert (pair['src'][ys, xs] > 128).all()
    assert ((pair['trg_kps'] >= 0) & (pair['trg_kps'] <= 63)).all()
    np.testing.assert_allclose(pair['trg_kps'], apply_affine(pair['src_kps'], pair['A'], pair['b']))
    # the target is bright where the source's stroke points went (bilinear, so not exact)
    tx, ty = np.rint(pair['trg_kps']).astype(int).T
    assert (pair['trg'][ty, tx] > 0).mean() > 0.8


def test_release_reads_back_through_the_spair_reader(tmp_path):
    root = str(tmp_path / 'digits_affine')
    written = write_spair_release(root, 6, seed=0)
    ds = SPair71kDataset(root, split='test', metainfo=dict(classes=DIGIT_CLASSES),
                         lazy_init=False)
    assert len(ds) == 6
    by_id = {ann['filename']: ann for ann in written}
    for i in range(len(ds)):
        pair = ds.get_data_info(i)
        ann = by_id[pair['pair_id']]
        assert pair['category'] == ann['category'] in DIGIT_CLASSES
        np.testing.assert_allclose(pair['src_kps'], ann['src_kps'], atol=1e-4)
        np.testing.assert_allclose(pair['trg_kps'], ann['trg_kps'], atol=1e-4)
        assert pair['trg_bbox'] == ann['trg_bndbox']
        assert osp.isfile(pair['src_img_path']) and osp.isfile(pair['trg_img_path'])
        assert tuple(pair['trg_imsize']) == (64, 64)
    # the same seed writes the same pairs
    again = write_spair_release(str(tmp_path / 'again'), 6, seed=0)
    assert [a['trg_kps'] for a in again] == [a['trg_kps'] for a in written]


def test_demo_end_to_end_with_a_tiny_teacher(tmp_path, tools_kit):
    teacher = save_ddpm_pipeline(str(tmp_path / 'teacher'))
    wd = str(tmp_path / 'demo')
    proc = tools_kit.run([osp.join(tools_kit.repo_root, 'tools', 'demo_correspondence.py'),
                          '--work-dir', wd, '--num-pairs', '3', '--train-pairs', '4',
                          '--teacher', teacher, '--show', '2'], cwd=str(tmp_path))
    assert proc.returncode == 0, proc.output[-4000:]
    with open(osp.join(wd, 'results.json')) as f:
        results = json.load(f)
    assert set(results['pck']) == {'ddpm_teacher', 'pixels', 'random_init', 'distilled_student'}
    for row in results['pck'].values():
        assert set(row) == {f'pck@{a}/{avg}' for a in (0.05, 0.1, 0.2)
                            for avg in ('point', 'image')}
        assert all(0 <= v <= 100 for v in row.values())
    assert results['pairs'] == 3 and results['train_pairs'] == 4 and results['seed'] == 0
    assert osp.isfile(osp.join(wd, 'matches.png'))
    assert 'distilled_student' in proc.stdout
    # training pairs come from the teacher's training digits, test pairs from the held-out ones
    train = SPair71kDataset(results['train_data_root'], split='trn',
                            metainfo=dict(classes=DIGIT_CLASSES))
    test = SPair71kDataset(results['data_root'], split='test',
                           metainfo=dict(classes=DIGIT_CLASSES))
    assert len(train) == 4 and len(test) == 3
    names = {osp.basename(d['src_img_path']) for d in train.data_list}
    assert not names & {osp.basename(d['src_img_path']) for d in test.data_list}
    # the student's checkpoint holds the student only (no teacher weight) and training moved
    # it away from the random-init baseline it started from
    import torch
    from mmengine.config import Config
    from mmengine.registry import MODELS
    ckpt = torch.load(results['student_checkpoint'], map_location='cpu', weights_only=False)
    state = ckpt['state_dict']
    assert state and all(k.startswith('extractor.backbone.') for k in state)
    cfg = Config.fromfile(osp.join(tools_kit.repo_root, results['configs']['random_init']))
    baseline = MODELS.build(cfg.model).state_dict()
    assert set(baseline) == set(state)
    assert any(not torch.equal(baseline[k], state[k]) for k in state
               if k.endswith('conv1.weight'))
