"""WFLWNMEMetric end to end: converted fake data, the config's test pipeline, fake predictions."""
import copy
import json
import os.path as osp

import numpy as np
import pytest

from .conftest import CONFIG_DIR
from .fake_wflw import ATTRIBUTES

CONFIG = osp.join(CONFIG_DIR, 'td-hm_res50_2xb64-60e_wflw-256x256.py')


@pytest.fixture(scope='module')
def cfg():
    from mmengine.config import Config
    return Config.fromfile(CONFIG)


def build_test_dataset(cfg, fake_wflw, ann_file):
    from mmengine.registry import init_default_scope
    from mmpose.registry import DATASETS
    init_default_scope('mmpose')
    dataset_cfg = copy.deepcopy(cfg.test_dataloader.dataset)
    dataset_cfg.update(data_root=str(fake_wflw['root']), ann_file=ann_file)
    return DATASETS.build(dataset_cfg)


def shift_of(ann_id):
    """The fake prediction of face ``ann_id`` is its ground truth moved by this (x, y)."""
    return np.array([float(ann_id), 0.5 * ann_id])


def evaluate(cfg_metric, dataset):
    """Run the test pipeline on every face, predict ground truth + shift, evaluate."""
    from mmengine.evaluator import Evaluator
    from mmengine.structures import InstanceData
    samples = []
    for i in range(len(dataset)):
        sample = dataset[i]['data_samples']
        gt = sample.gt_instances.keypoints
        sample.pred_instances = InstanceData(keypoints=gt + shift_of(sample.id),
                                             keypoint_scores=np.ones(gt.shape[:2]))
        samples.append(sample)
    evaluator = Evaluator(cfg_metric)
    evaluator.dataset_meta = dataset.metainfo
    evaluator.process(data_samples=samples)
    return evaluator.evaluate(len(samples)), samples


def expected_nme(fake_wflw, ann_file):
    """Hand computation: per face |shift| / |p60 - p72|, averaged over the full set and subsets."""
    with open(fake_wflw['root'] / ann_file) as f:
        anns = json.load(f)['annotations']
    nme = {}
    for ann in anns:
        pts = np.array(ann['keypoints']).reshape(98, 3)[:, :2]
        nme[ann['id']] = np.linalg.norm(shift_of(ann['id'])) / np.linalg.norm(pts[60] - pts[72])
    expected = {'NME': np.mean(list(nme.values()))}
    for name in ATTRIBUTES:
        flagged = [nme[a['id']] for a in anns if a['attributes'][name]]
        if flagged:
            expected[f'NME/{name}'] = np.mean(flagged)
    return expected, anns


def test_full_set_and_all_subsets_in_one_run(cfg, fake_wflw):
    ann_file = 'annotations/face_landmarks_wflw_test.json'
    dataset = build_test_dataset(cfg, fake_wflw, ann_file)
    metrics, samples = evaluate(cfg.test_evaluator, dataset)
    expected, anns = expected_nme(fake_wflw, ann_file)
    assert set(metrics) == {'NME'} | {f'NME/{a}' for a in ATTRIBUTES}
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value), key
    # the flags travelled from the json through the pipeline into the data samples
    by_id = {a['id']: a for a in anns}
    for sample in samples:
        assert sample.wflw_attributes == by_id[sample.id]['attributes']


def test_full_set_nme_equals_mmpose_nme(cfg, fake_wflw):
    dataset = build_test_dataset(cfg, fake_wflw, 'annotations/face_landmarks_wflw_test.json')
    ours, _ = evaluate(cfg.test_evaluator, dataset)
    theirs, _ = evaluate(dict(type='NME', norm_mode='keypoint_distance',
                              keypoint_indices=[60, 72]), dataset)
    assert ours['NME'] == pytest.approx(theirs['NME'])


def test_on_a_subset_file(cfg, fake_wflw):
    ann_file = 'annotations/face_landmarks_wflw_test_blur.json'
    dataset = build_test_dataset(cfg, fake_wflw, ann_file)
    metrics, _ = evaluate(cfg.test_evaluator, dataset)
    expected, anns = expected_nme(fake_wflw, ann_file)
    assert len(anns) == 2 and metrics['NME'] == pytest.approx(metrics['NME/blur'])
    assert set(metrics) == set(expected)  # subsets with no face in the file are left out
    assert 'NME/expression' not in metrics and 'NME/largepose' in metrics
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value), key


def test_without_attributes_only_the_full_nme(cfg, fake_wflw):
    dataset = build_test_dataset(cfg, fake_wflw, 'annotations/face_landmarks_wflw_test.json')
    metrics, _ = evaluate(dict(type='WFLWNMEMetric', attribute_key='not_there'), dataset)
    expected, _ = expected_nme(fake_wflw, 'annotations/face_landmarks_wflw_test.json')
    assert metrics == {'NME': pytest.approx(expected['NME'])}
