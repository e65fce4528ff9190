"""RandomFlipSwapLR: a mirrored face gets its left/right classes exchanged."""
import numpy as np
import pytest
from mmseg.registry import TRANSFORMS

import segmentation  # noqa: F401  registers the transform
from segmentation.datasets import CLASSES, RandomFlipSwapLR, class_index

L_EYE, R_EYE = class_index('l_eye'), class_index('r_eye')
L_BROW, R_BROW = class_index('l_brow'), class_index('r_brow')
L_EAR, R_EAR = class_index('l_ear'), class_index('r_ear')
SKIN, NOSE = class_index('skin'), class_index('nose')


def _results():
    seg = np.zeros((4, 6), dtype=np.uint8)
    seg[0] = [L_BROW, L_BROW, SKIN, NOSE, R_BROW, 255]
    seg[1] = [L_EYE, L_EYE, SKIN, NOSE, R_EYE, R_EYE]
    seg[2] = [L_EAR, SKIN, SKIN, SKIN, SKIN, R_EAR]
    img = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    return dict(img=img, gt_seg_map=seg, seg_fields=['gt_seg_map'], img_shape=(4, 6))


def _build(**kwargs):
    from mmengine.registry import init_default_scope
    init_default_scope('mmseg')
    return TRANSFORMS.build(dict(type='RandomFlipSwapLR', **kwargs))


def test_horizontal_flip_mirrors_and_swaps_pairs():
    flip = _build(prob=1.0)
    assert isinstance(flip, RandomFlipSwapLR)
    before = _results()
    out = flip(_results())
    assert out['flip'] and out['flip_direction'] == 'horizontal'
    np.testing.assert_array_equal(out['img'], before['img'][:, ::-1])
    seg = out['gt_seg_map']
    # mirrored geometry, with each l_/r_ pair exchanged; everything else only mirrored
    np.testing.assert_array_equal(seg[0], [255, L_BROW, NOSE, SKIN, R_BROW, R_BROW])
    np.testing.assert_array_equal(seg[1], [L_EYE, L_EYE, NOSE, SKIN, R_EYE, R_EYE])
    np.testing.assert_array_equal(seg[2], [L_EAR, SKIN, SKIN, SKIN, SKIN, R_EAR])
    np.testing.assert_array_equal(seg[3], 0)
    assert out['swap_seg_labels'] == [[L_BROW, R_BROW], [L_EYE, R_EYE], [L_EAR, R_EAR]]


def test_flipping_twice_restores_the_labels():
    flip = _build(prob=1.0)
    once = flip(_results())
    twice = flip(dict(once))
    np.testing.assert_array_equal(twice['gt_seg_map'], _results()['gt_seg_map'])


def test_no_flip_and_vertical_flip_keep_the_labels():
    out = _build(prob=0.0)(_results())
    assert not out['flip']
    np.testing.assert_array_equal(out['gt_seg_map'], _results()['gt_seg_map'])
    out = _build(prob=1.0, direction='vertical')(_results())
    np.testing.assert_array_equal(out['gt_seg_map'], _results()['gt_seg_map'][::-1])


def test_pairs_by_name_or_id_and_bad_pairs():
    flip = RandomFlipSwapLR(prob=1.0, swap_classes=[('l_eye', 'r_eye'), (L_EAR, R_EAR)])
    assert flip.swap_pairs == ((L_EYE, R_EYE), (L_EAR, R_EAR))
    with pytest.raises(KeyError, match='left_eye'):
        RandomFlipSwapLR(prob=1.0, swap_classes=[('left_eye', 'r_eye')])
    with pytest.raises(ValueError, match='more than one'):
        RandomFlipSwapLR(prob=1.0, swap_classes=[('l_eye', 'r_eye'), ('l_eye', 'l_ear')])
    assert len(CLASSES) == 19
