"""FaceParsingMetric and its per-class math against hand computations."""
import math

import numpy as np
import pytest
import torch

from segmentation.datasets import CLASSES
from segmentation.evaluation import FaceParsingMetric, confusion_matrix, face_parsing_scores


def test_confusion_matrix_counts_rows_gt_columns_prediction():
    gt = np.array([[0, 0, 1], [1, 2, 2]])
    pred = np.array([[0, 1, 1], [1, 2, 0]])
    want = np.array([[1, 1, 0],
                     [0, 2, 0],
                     [1, 0, 1]])
    np.testing.assert_array_equal(confusion_matrix(pred, gt, 3), want)
    np.testing.assert_array_equal(confusion_matrix(torch.from_numpy(pred), torch.from_numpy(gt), 3),
                                  want)


def test_confusion_matrix_skips_ignored_pixels_and_refuses_unknown_labels():
    gt = np.array([0, 255, 1, 255])
    pred = np.array([0, 1, 1, 0])
    np.testing.assert_array_equal(confusion_matrix(pred, gt, 2), [[1, 0], [0, 1]])
    with pytest.raises(ValueError, match='label 5'):
        confusion_matrix(np.array([0, 1]), np.array([0, 5]), 3)


def test_scores_of_a_known_confusion_matrix():
    # rows = ground truth (background, part A, part B), columns = prediction
    conf = np.array([[1, 1, 0],
                     [0, 2, 0],
                     [1, 0, 1]])
    s = face_parsing_scores(conf, background_index=0)
    # background: TP 1, FP 1, FN 1 -> IoU 1/3, F1 2/4
    # part A:     TP 2, FP 1, FN 0 -> IoU 2/3, F1 4/5, precision 2/3, recall 1
    # part B:     TP 1, FP 0, FN 1 -> IoU 1/2, F1 2/3, precision 1, recall 1/2
    np.testing.assert_allclose(s['per_class']['IoU'], [1 / 3, 2 / 3, 1 / 2])
    np.testing.assert_allclose(s['per_class']['F1'], [1 / 2, 4 / 5, 2 / 3])
    np.testing.assert_allclose(s['per_class']['Precision'], [1 / 2, 2 / 3, 1])
    np.testing.assert_allclose(s['per_class']['Recall'], [1 / 2, 1, 1 / 2])
    assert s['mIoU'] == pytest.approx((2 / 3 + 1 / 2) / 2)        # parts only: 7/12
    assert s['mF1'] == pytest.approx((4 / 5 + 2 / 3) / 2)         # 11/15
    assert s['background_IoU'] == pytest.approx(1 / 3)
    assert s['background_F1'] == pytest.approx(1 / 2)
    assert s['aAcc'] == pytest.approx(4 / 6)
    # without a background class every class counts
    assert face_parsing_scores(conf, background_index=None)['mIoU'] == pytest.approx(
        (1 / 3 + 2 / 3 + 1 / 2) / 3)


def test_absent_class_is_left_out_of_the_means_but_false_positives_count():
    conf = np.array([[5, 0, 0, 0],
                     [0, 3, 0, 1],   # part 3 never in the ground truth, predicted once
                     [0, 0, 0, 0],   # part 2 absent from ground truth and prediction
                     [0, 0, 0, 0]])
    s = face_parsing_scores(conf)
    assert math.isnan(s['per_class']['IoU'][2])
    assert s['per_class']['IoU'][3] == 0
    assert s['mIoU'] == pytest.approx((3 / 4 + 0) / 2)
    assert s['mF1'] == pytest.approx((6 / 7 + 0) / 2)


def test_perfect_prediction_scores_100_through_the_metric():
    metric = FaceParsingMetric()
    metric.dataset_meta = dict(classes=CLASSES)
    gt = torch.arange(19).repeat_interleave(4).reshape(1, 4, 19)
    sample = dict(pred_sem_seg=dict(data=gt.clone()), gt_sem_seg=dict(data=gt.clone()))
    metric.process({}, [sample, sample])
    metrics = metric.evaluate(2)
    assert metrics == dict(mIoU=100.0, mF1=100.0, background_IoU=100.0, background_F1=100.0,
                           aAcc=100.0)


def test_metric_sums_confusions_over_samples_and_prints_tables():
    metric = FaceParsingMetric()
    metric.dataset_meta = dict(classes=('background', 'l_eye', 'r_eye'))
    samples = []
    for pred, gt in (([0, 1, 1], [0, 0, 1]), ([1, 2, 0], [1, 2, 2])):
        samples.append(dict(pred_sem_seg=dict(data=torch.tensor([pred])),
                            gt_sem_seg=dict(data=torch.tensor([gt]))))
    metric.process({}, samples)
    metrics = metric.evaluate(2)  # the confusion matrix of test_scores_of_a_known_...
    assert metrics['mIoU'] == pytest.approx(58.33)
    assert metrics['mF1'] == pytest.approx(73.33)
    assert metrics['background_IoU'] == pytest.approx(33.33)
    assert metrics['aAcc'] == pytest.approx(66.67)
    tables = metric.format_tables(face_parsing_scores(np.eye(3)), ('background', 'l_eye', 'r_eye'))
    assert 'background (not in means)' in tables and 'r_eye' in tables and 'mF1 (%)' in tables
