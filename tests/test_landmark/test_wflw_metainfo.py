"""The WFLW metainfo: flip pairs checked on a mirror-symmetric synthetic face."""
import os.path as osp
import warnings

import numpy as np
import pytest

import landmark  # noqa: F401  registers WFLWAttributeDataset

from .conftest import REPO
from .fake_wflw import synthetic_face

METAINFO = osp.join(REPO, 'landmark', 'configs', '_base_', 'datasets', 'wflw.py')


@pytest.fixture(scope='module')
def meta():
    from mmpose.datasets.datasets.utils import parse_pose_metainfo
    return parse_pose_metainfo(dict(from_file=METAINFO))


def test_parts_and_sizes(meta):
    assert meta['num_keypoints'] == 98 and meta['dataset_name'] == 'wflw'
    flip = meta['flip_indices']
    assert [flip[i] for i in range(33)] == list(range(32, -1, -1))  # contour 0<->32, ..., 16
    assert flip[60] == 72 and flip[96] == 97  # outer eye corners, pupils
    assert sorted(flip) == list(range(98)) and all(flip[flip[i]] == i for i in range(98))
    assert [i for i in range(98) if flip[i] == i] == [16, 51, 52, 53, 54, 57, 79, 85, 90, 94]


def test_flip_pairs_mirror_a_symmetric_face(meta):
    """Mirroring the face about its axis and renumbering with flip_indices gives it back."""
    face = synthetic_face(0, 0, 50)
    mirrored = face * np.array([-1, 1])
    np.testing.assert_allclose(mirrored[meta['flip_indices']], face, atol=1e-9)
    # and a wrong table would not: swapping the two eyes' lids breaks it
    wrong = list(meta['flip_indices'])
    wrong[61], wrong[65] = wrong[65], wrong[61]
    assert not np.allclose(mirrored[wrong], face)


def test_same_flip_table_as_mmpose(meta):
    from mmpose.datasets.datasets.utils import parse_pose_metainfo
    try:
        with warnings.catch_warnings():  # "found in mmpose/.mim instead": that is the point
            warnings.simplefilter('ignore', UserWarning)
            theirs = parse_pose_metainfo(dict(from_file='configs/_base_/datasets/wflw.py'))
    except FileNotFoundError:
        pytest.skip('mmpose ships no WFLW metainfo here')
    assert meta['flip_indices'] == theirs['flip_indices']


def test_random_flip_of_the_pipeline_keeps_a_centred_symmetric_face(fake_wflw):
    """RandomFlip (with the dataset's flip_indices) maps a face centred in its image onto itself."""
    from mmengine.registry import init_default_scope
    from mmpose.registry import DATASETS
    init_default_scope('mmpose')
    dataset = DATASETS.build(dict(
        type='WFLWAttributeDataset', data_root=str(fake_wflw['root']),
        ann_file='annotations/face_landmarks_wflw_test.json',
        data_prefix=dict(img='WFLW_images/'), test_mode=True,
        pipeline=[dict(type='LoadImage'), dict(type='GetBBoxCenterScale', padding=1.25),
                  dict(type='RandomFlip', direction='horizontal', prob=1.0)]))
    # the first test face is centred in its 128-pixel-wide image (x = 63.5)
    results = dataset[0]
    assert results['flip'] and results['img_shape'][1] == 128
    original = dataset.get_data_info(0)['keypoints']
    np.testing.assert_allclose(results['keypoints'], original, atol=2e-3)
