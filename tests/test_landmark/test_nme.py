"""The NME math of landmark.evaluation against hand computations."""
import numpy as np
import pytest

from landmark.evaluation.functional import interocular_distance, nme_per_sample

from .fake_wflw import synthetic_face


def _face_with_eye_corners(left=(10.0, 20.0), right=(50.0, 20.0)):
    """98 points on a grid, with the outer eye corners 60 and 72 at the given places."""
    rng = np.random.default_rng(0)
    gt = rng.uniform(0, 100, size=(98, 2))
    gt[60], gt[72] = left, right
    return gt


def test_perfect_prediction_is_zero():
    gt = _face_with_eye_corners()
    assert nme_per_sample(gt, gt).tolist() == [0.0]


def test_interocular_distance_uses_points_60_and_72():
    gt = _face_with_eye_corners((10, 20), (50, 50))
    assert interocular_distance(gt).tolist() == [50.0]  # a 30-40-50 triangle
    face = synthetic_face(0, 0, 10)
    assert interocular_distance(face)[0] == pytest.approx(2 * (0.45 + 0.2) * 10)


@pytest.mark.parametrize('shift', [(3.0, 4.0), (-5.0, 0.0), (0.0, 2.5)])
def test_shift_of_every_point_is_shift_over_interocular(shift):
    gt = _face_with_eye_corners()  # inter-ocular distance 40
    s = np.hypot(*shift)
    assert nme_per_sample(gt + np.array(shift), gt)[0] == pytest.approx(s / 40)


def test_shift_of_one_point_is_averaged_over_98():
    gt = _face_with_eye_corners()
    pred = gt.copy()
    pred[5] += (6.0, 8.0)  # 10 px off
    assert nme_per_sample(pred, gt)[0] == pytest.approx(10 / (98 * 40))


def test_batch_has_one_value_per_face_with_its_own_norm():
    gt = np.stack([_face_with_eye_corners((0, 0), (40, 0)),
                   _face_with_eye_corners((0, 0), (0, 80))])
    pred = gt + np.array([[[2.0, 0.0]], [[0.0, 4.0]]])
    np.testing.assert_allclose(nme_per_sample(pred, gt), [2 / 40, 4 / 80])


def test_invisible_points_do_not_count():
    gt = _face_with_eye_corners()
    pred = gt.copy()
    pred[:49] += (4.0, 0.0)  # the first half is off by 4 px but marked invisible
    visible = np.arange(98) >= 49
    assert nme_per_sample(pred, gt, visible=visible)[0] == 0
    assert nme_per_sample(pred, gt)[0] == pytest.approx(49 * 4 / (98 * 40))


def test_custom_norm_indices():
    gt = _face_with_eye_corners()
    gt[0], gt[1] = (0, 0), (0, 20)
    assert nme_per_sample(gt + (1.0, 0.0), gt, norm_indices=(0, 1))[0] == pytest.approx(1 / 20)


def test_bad_inputs_are_refused():
    gt = _face_with_eye_corners((10, 10), (10, 10))
    with pytest.raises(ValueError, match='zero distance'):
        nme_per_sample(gt, gt)
    with pytest.raises(ValueError, match='differ in shape'):
        nme_per_sample(gt[:97], gt)
    with pytest.raises(ValueError, match='no visible point'):
        nme_per_sample(_face_with_eye_corners(), _face_with_eye_corners(),
                       visible=np.zeros(98, bool))


def test_agrees_with_mmpose_keypoint_nme():
    from mmpose.evaluation.functional import keypoint_nme
    rng = np.random.default_rng(1)
    gt = np.stack([synthetic_face(50, 50, s) for s in (10, 20, 30)])
    pred = gt + rng.normal(0, 1.5, gt.shape)
    mask = np.ones(gt.shape[:2], bool)
    norm = np.tile(interocular_distance(gt)[:, None], (1, 2))
    assert nme_per_sample(pred, gt).mean() == pytest.approx(keypoint_nme(pred, gt, mask, norm))
