"""PCK: every convention on tiny hand-computed pairs, every preset on the same three pairs.

Images are 420 x 210 so that the 840 frames scale exactly (padded: s = 2 with a 210-pixel top
pad; stretched: x2 horizontally, x4 vertically), which keeps ties at the threshold exact.
"""
import json

import numpy as np
import pytest
import torch

from correspondence.evaluation import (PRESETS, PCKMetric, aggregate, correct, pair_distances,
                                       pck_threshold, per_category, reference_length,
                                       resolve_options, to_frame)


def pair(pair_id, category, trg_bbox, trg_kps, pred_kps, src_kps=None, src_bbox=None,
         src_imsize=(420, 210), trg_imsize=(420, 210)):
    trg_kps = np.asarray(trg_kps, np.float32)
    return dict(
        pair_id=pair_id, category=category, src_img_path='s.jpg', trg_img_path='t.jpg',
        src_imsize=src_imsize, trg_imsize=trg_imsize,
        src_kps=np.asarray(trg_kps if src_kps is None else src_kps, np.float32), trg_kps=trg_kps,
        kps_ids=None, src_bbox=src_bbox, trg_bbox=trg_bbox, difficulty={},
        pred_kps=np.asarray(pred_kps, np.float32))


# Three pairs, alpha = 0.1. Per keypoint: original distance (threshold 0.1 * max(bbox side)).
# A (cat), box 100 x 50, thr 10: dists 10 (exactly at the threshold), 15 (vertical).
# B (cat), box 60 x 30, thr 6: dist 7 (horizontal).
# C (dog), box 50 x 100, thr 10: dists 3, 8 (vertical), 45 (vertical), 12 (horizontal).
RECORDS = [
    pair('A', 'cat', [0, 0, 100, 50], [[10, 10], [50, 20]], [[20, 10], [50, 35]]),
    pair('B', 'cat', [0, 0, 60, 30], [[100, 100]], [[107, 100]]),
    pair('C', 'dog', [200, 0, 250, 100], [[210, 10], [220, 20], [230, 30], [240, 40]],
         [[210, 13], [220, 28], [230, 75], [252, 40]]),
]
# Correctness by hand:
# dift / hyperfeatures (original, <=):  A [T, F]  B [F]  C [T, T, F, F]
# sd_dino / geoaware (padded x2, <):    A [F, F] (20 < 20 fails)  B [F] (14 vs 12)
#                                        C [T, T, F, F] (6, 16 vs 20; 90; 24)
# distilldift_release (stretched x2/x4, thr = 0.1 * max side * 4, <):
#     A thr 40: [20 T, 60 F]   B thr 24: [14 T]   C thr 40: [12 T, 32 T, 180 F, 24 T]
# hyperfeatures_img (original, thr 0.1 * 420 = 42, <=): A [T, T]  B [T]  C [T, T, F, T]
EXPECTED = {
    'dift/pck@0.1/per_image': 100 * (1 / 2 + 0 + 2 / 4) / 3,
    'dift/pck@0.1/per_point': 100 * 3 / 7,
    'sd_dino/pck@0.1/category_mean': 100 * (0 / 3 + 2 / 4) / 2,
    'sd_dino/pck@0.1/category_weighted': 100 * (2 * (0 / 3) + 1 * (2 / 4)) / 3,
    'geoaware_point/pck@0.1/per_point': 100 * 2 / 7,
    'geoaware_image/pck@0.1/per_image': 100 * (0 + 0 + 2 / 4) / 3,
    'distilldift_release/pck@0.1/per_point': 100 * 5 / 7,
    'distilldift_release/pck@0.1/category_mean': 100 * (2 / 3 + 3 / 4) / 2,
    'hyperfeatures/pck@0.1/per_point': 100 * 3 / 7,
    'hyperfeatures_img/pck@0.1/per_point': 100 * 6 / 7,
}


def evaluate(metric, records):
    metric.process({}, [dict(r) for r in records])
    return metric.evaluate(len(records))


# --- pure functions ------------------------------------------------------------------------

SOURCES = pair('S', 'cat', [0, 0, 100, 60], [[10, 10], [50, 20]], [[10, 10], [50, 20]],
               src_kps=[[0, 0], [30, 60]], src_bbox=[10, 20, 50, 100], src_imsize=(280, 560))


@pytest.mark.parametrize('source, length', [
    ('target_bbox', 100), ('source_bbox', 80), ('target_kps', 40), ('source_kps', 60),
    ('image', 420)])
def test_threshold_sources_in_the_original_frame(source, length):
    assert reference_length(SOURCES, source) == length
    assert pck_threshold(SOURCES, source, alpha=0.5) == 0.5 * length


@pytest.mark.parametrize('source, frame, scale, length', [
    # padded 840: target s = 840 / 420 = 2, source (280 x 560) s = 840 / 560 = 1.5
    ('target_bbox', 'padded', 'frame', 200), ('source_bbox', 'padded', 'frame', 120),
    ('target_kps', 'padded', 'frame', 80), ('source_kps', 'padded', 'frame', 90),
    ('image', 'padded', 'frame', 840),
    # stretched 840: target x2, x4; source x3, x1.5. Box 100 x 60 -> 200 x 240 in the frame.
    ('target_bbox', 'stretched', 'frame', 240), ('target_bbox', 'stretched', 'x', 200),
    ('target_bbox', 'stretched', 'y', 400), ('source_bbox', 'stretched', 'frame', 120),
    ('source_bbox', 'stretched', 'x', 240), ('source_bbox', 'stretched', 'y', 120),
    ('image', 'stretched', 'frame', 840), ('image', 'stretched', 'y', 1680),
    # padded is isotropic: x and y scales agree with the frame
    ('target_bbox', 'padded', 'y', 200),
])
def test_threshold_in_frames(source, frame, scale, length):
    assert reference_length(SOURCES, source, frame, 840, scale) == pytest.approx(length, abs=0)
    assert pck_threshold(SOURCES, source, frame, 840, 0.1, scale) == pytest.approx(0.1 * length)


def test_padded_frame_by_hand():
    # 200 x 100 into 64: s = 0.32, content 64 x 32, top pad (64 - 32) // 2 = 16.
    kps = to_frame([[100, 50], [0, 0]], (200, 100), 'padded', 64)
    np.testing.assert_allclose(kps, [[32, 32], [0, 16]])
    # 420 x 210 into 840: s = 2, top pad 210; errors 10 and 15 px become 20 and 30.
    sample = RECORDS[0]
    np.testing.assert_array_equal(to_frame(sample['trg_kps'], (420, 210), 'padded', 840),
                                  [[20, 230], [100, 250]])
    np.testing.assert_array_equal(pair_distances(sample, 'padded', 840), [20, 30])
    np.testing.assert_array_equal(pair_distances(sample, 'stretched', 840), [20, 60])
    np.testing.assert_array_equal(pair_distances(sample), [10, 15])


def test_compare_at_exactly_the_threshold():
    gt = np.array([[0., 0.], [0., 0.]])
    pred = np.array([[3., 4.], [0., 4.9]])  # distances 5 and 4.9
    np.testing.assert_array_equal(correct(pred, gt, 5.0, '<='), [True, True])
    np.testing.assert_array_equal(correct(pred, gt, 5.0, '<'), [False, True])
    with pytest.raises(ValueError, match="'<='"):
        correct(pred, gt, 5.0, '=<')


def test_averaging_modes_differ():
    rows = [dict(category='a', correct=[True, False, False, False]),  # 1/4
            dict(category='a', correct=[True]),                       # 1/1
            dict(category='b', correct=[True, True]),                 # 2/2
            dict(category='b', correct=[]),                           # no keypoints: left out
            dict(category='c', correct=[False, False, False])]        # 0/3
    assert aggregate(rows, 'point') == pytest.approx(4 / 10)
    assert aggregate(rows, 'image') == pytest.approx((1 / 4 + 1 + 1 + 0) / 4)
    # per category pooled: a 2/5, b 2/2, c 0/3
    assert aggregate(rows, 'category_mean') == pytest.approx((2 / 5 + 1 + 0) / 3)
    assert aggregate(rows, 'category_weighted') == pytest.approx((2 * 2 / 5 + 1 * 1 + 1 * 0) / 4)
    assert per_category(rows, 'point') == pytest.approx(dict(a=2 / 5, b=1.0, c=0.0))
    assert per_category(rows, 'image') == pytest.approx(dict(a=5 / 8, b=1.0, c=0.0))
    assert np.isnan(aggregate([dict(category='a', correct=[])], 'point'))


# --- the metric ----------------------------------------------------------------------------

def test_every_preset_on_the_same_records():
    metric = PCKMetric(alphas=(0.1, ), presets=list(PRESETS), per_category=False)
    metrics = evaluate(metric, RECORDS)
    assert metrics.keys() == EXPECTED.keys()
    for key, value in EXPECTED.items():
        assert metrics[key] == pytest.approx(value, abs=1e-9), key


def test_per_category_table_and_several_alphas(capsys):
    metric = PCKMetric(alphas=(0.1, 0.05), presets=['dift', 'sd_dino'])
    metrics = evaluate(metric, RECORDS)
    assert metrics['dift/pck@0.1/per_point/cat'] == pytest.approx(100 * 1 / 3)
    assert metrics['dift/pck@0.1/per_point/dog'] == pytest.approx(100 * 2 / 4)
    assert metrics['dift/pck@0.1/per_image/cat'] == pytest.approx(100 * (1 / 2 + 0) / 2)
    assert metrics['sd_dino/pck@0.1/per_point/dog'] == pytest.approx(50.0)
    assert 'sd_dino/pck@0.1/per_image/dog' not in metrics
    # alpha 0.05, original: thresholds 5, 3, 5 -> only C's 3-pixel error is correct
    assert metrics['dift/pck@0.05/per_point'] == pytest.approx(100 * 1 / 7)
    table = metric.format_tables(metrics, {'dift/pck@0.1/per_point': {'cat': 100 / 3}},
                                 dict(cat=[2, 3], dog=[1, 4]))
    assert 'sd_dino' in table and 'pck@0.05 per_image' in table and '33.33' in table


def test_custom_protocols_and_tensor_inputs():
    records = [dict(r, pred_kps=torch.as_tensor(r['pred_kps']), trg_kps=torch.as_tensor(
        r['trg_kps'])) for r in RECORDS]
    metric = PCKMetric(presets=[
        dict(name='dift_strict', preset='dift', compare='<', averaging='point'),
        dict(name='pf_willow', threshold='target_kps', alphas=(0.5, ))], per_category=False)
    metrics = evaluate(metric, records)
    assert metrics['dift_strict/pck@0.1/per_point'] == pytest.approx(100 * 2 / 7)  # A's tie fails
    # keypoint boxes: A 40 -> thr 20 (10, 15 ok); B one point, box 0 -> thr 0 (7 fails);
    # C 30 -> thr 15 (3, 8, 12 ok; 45 fails)
    assert metrics['pf_willow/pck@0.5/per_point'] == pytest.approx(100 * 5 / 7)


def test_registered_in_root_metrics():
    from mmengine.registry import METRICS
    metric = METRICS.build(dict(type='PCKMetric', presets=['geoaware_point']))
    assert isinstance(metric, PCKMetric)


def test_pair_dump_round_trip(tmp_path):
    path = tmp_path / 'out' / 'pairs.json'
    metric = PCKMetric(alphas=(0.1, 0.2), presets=list(PRESETS), per_category=False,
                       dump_pairs=str(path))
    metrics = evaluate(metric, RECORDS)
    dump = json.loads(path.read_text())
    assert [p['pair_id'] for p in dump['pairs']] == ['A', 'B', 'C']
    first = dump['pairs'][0]
    assert first['category'] == 'cat' and first['trg_bbox'] == [0, 0, 100, 50]
    assert first['pred_kps'] == [[20, 10], [50, 35]] and first['src_kps'] == first['trg_kps']
    assert first['protocols']['sd_dino']['thresholds'] == {'pck@0.1': 20.0, 'pck@0.2': 40.0}
    assert first['protocols']['distilldift_release']['thresholds']['pck@0.1'] == 40.0
    assert first['protocols']['dift']['distances'] == [10.0, 15.0]
    assert dump['protocols']['sd_dino']['frame'] == 'padded'
    # recompute every reported number from the dump alone
    for name, options in dump['protocols'].items():
        for alpha in options['alphas']:
            key = f'pck@{alpha:g}'
            rows = []
            for p in dump['pairs']:
                entry = p['protocols'][name]
                dist, thr = np.array(entry['distances']), entry['thresholds'][key]
                ok = dist <= thr if options['compare'] == '<=' else dist < thr
                rows.append(dict(category=p['category'], correct=ok))
            for mode in options['averaging']:
                label = dict(point='per_point', image='per_image').get(mode, mode)
                assert 100 * aggregate(rows, mode) == pytest.approx(
                    metrics[f'{name}/{key}/{label}'])


# --- errors --------------------------------------------------------------------------------

def test_unknown_preset_lists_the_presets():
    with pytest.raises(ValueError) as err:
        PCKMetric(presets=['dift', 'sd-dino'])
    message = str(err.value)
    assert "'sd-dino'" in message and all(repr(name) in message for name in PRESETS)


@pytest.mark.parametrize('spec, words', [
    (dict(name='x', frames='padded'), ["'frames'", "'frame'", "'threshold'"]),
    (dict(name='x', threshold='bbox'), ["'bbox'", "'target_bbox'", "'image'"]),
    (dict(name='x', frame='padded'), ['frame_size']),
    (dict(name='x', averaging=('per_point', )), ["'per_point'", "'category_weighted'"]),
    (dict(name='x', compare='le'), ["'<='", "'<'"]),
    (dict(name='x', frame='stretched', frame_size=840, threshold_scale='z'), ["'y'"]),
    (dict(name='x', preset='difft'), ["'dift'"]),
])
def test_unknown_options_list_the_valid_names(spec, words):
    with pytest.raises(ValueError) as err:
        resolve_options(spec)
    for word in words:
        assert word in str(err.value)


def test_duplicate_protocol_names():
    with pytest.raises(ValueError, match='more than once'):
        PCKMetric(presets=['dift', dict(name='dift', compare='<')])


def test_a_missing_box_is_an_error_not_a_fallback():
    sample = dict(RECORDS[0], trg_bbox=None)
    with pytest.raises(ValueError) as err:
        pck_threshold(sample, 'target_bbox')
    assert 'trg_bbox' in str(err.value) and "'target_kps'" in str(err.value)
    metric = PCKMetric(presets=['dift'])
    with pytest.raises(ValueError, match="'A'"):
        metric.process({}, [sample])
    assert reference_length(sample, 'target_kps') == 40  # the explicit alternative works


def test_a_sample_without_prediction():
    sample = dict(RECORDS[0])
    del sample['pred_kps']
    with pytest.raises(ValueError, match='pred_kps'):
        PCKMetric().process({}, [sample])
