"""ITMRetrievalMetric on made-up model outputs (interface 3), every number computed by hand.

Checked: accuracy / R@1 / R@5 per score kind, overall and per subset; R@5 left out when a group
has fewer than 5 candidates; ties and NaN count as failures (a constant scorer gets 0, never
credit for the target's position); Winoground text / image / group scores; the ``--out`` dump
(every question's scores, target, subset and rank) and that the metrics recompute from it; that
``tools/test.py --out FILE.json`` recognises the metric as a per-question dump.
"""
import json
import math
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from image_text_matching.evaluation import (ITMRetrievalMetric, metrics_from_dump,
                                            retrieval_metrics, target_rank, winoground_outcome)

NAN = float('nan')
# text retrieval among 6 candidates; the comments give the target's rank by hand:
# rank = 1 + number of other candidates the target does not strictly beat
OUTPUTS = [
    dict(question_id='q1', subset='A', retrieval='text', target=0, scores=dict(
        dsd=[0.9, 0.5, 0.7, 0.1, 0.2, 0.3],        # rank 1
        attention=[0.1, 0.5, 0.7, 0.2, 0.3, 0.0],  # 0.5 0.7 0.2 0.3 beat it: rank 5
        itm=[0.5, 0.5, 0.1, 0.1, 0.1, 0.1])),      # a tie with candidate 1: rank 2
    dict(question_id='q2', subset='B', retrieval='text', target=2, scores=dict(
        dsd=[0.1, 0.2, 0.3, 0.4, 0.0, 0.0],        # 0.4 beats it: rank 2
        attention=[0.0] * 6,                       # constant: all ties, rank 6
        itm=[NAN, 0.0, 1.0, 0.0, 0.0, 0.0])),      # NaN is not beaten: rank 2
    dict(question_id='q3', subset='B', retrieval='text', target=0, scores=dict(
        dsd=torch.tensor([1.0, 0, 0, 0, 0, 0]),    # tensors are accepted: rank 1
        attention=[0.0, 1, 2, 3, 4, 5],            # rank 6
        itm=[3.0, 2, 1, 0, -1, -2])),              # rank 1
]
# dsd ranks [1, 2, 1], attention [5, 6, 6], itm [2, 2, 1]; subsets A = [q1], B = [q2, q3]
EXPECTED = {
    'dsd/accuracy': 200 / 3, 'dsd/R@1': 200 / 3, 'dsd/R@5': 100.0,
    'dsd/A/accuracy': 100.0, 'dsd/A/R@1': 100.0, 'dsd/A/R@5': 100.0,
    'dsd/B/accuracy': 50.0, 'dsd/B/R@1': 50.0, 'dsd/B/R@5': 100.0,
    'attention/accuracy': 0.0, 'attention/R@1': 0.0, 'attention/R@5': 100 / 3,
    'attention/A/accuracy': 0.0, 'attention/A/R@1': 0.0, 'attention/A/R@5': 100.0,
    'attention/B/accuracy': 0.0, 'attention/B/R@1': 0.0, 'attention/B/R@5': 0.0,
    'itm/accuracy': 100 / 3, 'itm/R@1': 100 / 3, 'itm/R@5': 100.0,
    'itm/A/accuracy': 0.0, 'itm/A/R@1': 0.0, 'itm/A/R@5': 100.0,
    'itm/B/accuracy': 50.0, 'itm/B/R@1': 50.0, 'itm/B/R@5': 100.0,
}
# Winoground [image][text]: (text, image, group) by hand
WINOGROUND = [
    ([[2.0, 1.0], [0.0, 3.0]], (True, True, True)),
    ([[2.0, 1.0], [3.0, 0.0]], (False, False, False)),  # image 1 prefers caption 0; 2 < 3
    ([[1.0, 2.0], [0.0, 3.0]], (False, True, False)),   # image 0 prefers caption 1
    ([[1.0, 1.0], [1.0, 1.0]], (False, False, False)),  # ties fail
]


def evaluate(outputs, **kwargs):
    metric = ITMRetrievalMetric(**kwargs)
    metric.process(None, outputs)
    return metric.evaluate(len(outputs))


def test_ranks_count_ties_and_nan_as_failures():
    assert target_rank([0.9, 0.5, 0.7], 0) == 1
    assert target_rank([0.5, 0.5, 0.1], 0) == 2 and target_rank([0.5, 0.5, 0.1], 1) == 2
    assert target_rank([NAN, 0.1, 0.2], 0) == 3 and target_rank([0.3, NAN, 0.2], 0) == 2
    assert target_rank([1.0] * 10, 0) == 10


def test_accuracy_and_recall_per_kind_and_subset_by_hand():
    metrics = evaluate(OUTPUTS)
    assert set(metrics) == {f'itm/{k}' for k in EXPECTED}  # default prefix 'itm'
    for key, value in EXPECTED.items():
        assert math.isclose(metrics[f'itm/{key}'], value), key
    # a kind the outputs lack, and the prefix
    assert set(evaluate(OUTPUTS, scores=('dsd', ), topk=(1, ), prefix='comvg')) == {
        'comvg/dsd/accuracy', 'comvg/dsd/R@1', 'comvg/dsd/A/accuracy', 'comvg/dsd/A/R@1',
        'comvg/dsd/B/accuracy', 'comvg/dsd/B/R@1'}
    with pytest.raises(ValueError, match=r"has the score kinds \['itm'\] but not "
                                         r"\['dsd', 'attention'\]; set the metric's scores"):
        evaluate([dict(OUTPUTS[0], scores=dict(itm=[1.0, 0.0]))])


def test_binary_image_retrieval_reports_no_recall_at_5():
    outputs = [dict(question_id=str(i), subset='verb', retrieval='image', target=0,
                    scores=dict(dsd=s)) for i, s in enumerate([[2.0, 1.0], [1.0, 1.0], [0.0, 1.0],
                                                               [5.0, -5.0]])]
    assert evaluate(outputs, scores=('dsd', )) == {'itm/dsd/accuracy': 50.0, 'itm/dsd/R@1': 50.0}


def test_winoground_scores_by_hand():
    outputs = [dict(question_id=f'w{i}', subset='Object' if i < 2 else 'Relation',
                    retrieval='pairwise', target=0, scores=dict(dsd=m, itm=m))
               for i, (m, _) in enumerate(WINOGROUND)]
    for m, (text, image, group) in WINOGROUND:
        assert winoground_outcome(m) == dict(text=text, image=image, group=group)
    metrics = evaluate(outputs, scores=('dsd', 'itm'))
    assert metrics['itm/dsd/text_score'] == 25.0 and metrics['itm/dsd/image_score'] == 50.0
    assert metrics['itm/dsd/group_score'] == 25.0
    assert metrics['itm/itm/Object/text_score'] == 50.0  # w0 yes, w1 no
    assert metrics['itm/itm/Relation/image_score'] == 50.0  # w2 yes, w3 no
    assert metrics['itm/itm/Relation/group_score'] == 0.0
    with pytest.raises(ValueError, match=r'expected a 2 x 2 \[image\]\[text\] list'):
        evaluate([dict(outputs[0], scores=dict(dsd=[1.0, 2.0]))], scores=('dsd', ))


def test_dump_round_trip(tmp_path):
    out = str(tmp_path / 'questions.json')
    pairwise = dict(question_id='w0', subset='wino', retrieval='pairwise', target=0,
                    scores=dict(dsd=WINOGROUND[2][0], attention=WINOGROUND[0][0],
                                itm=WINOGROUND[1][0]))
    metrics = evaluate(OUTPUTS + [pairwise], dump_pairs=out)
    with open(out) as f:
        payload = json.load(f)
    assert payload['scores'] == ['dsd', 'attention', 'itm'] and payload['topk'] == [1, 5]
    assert 'tie' in payload['ties']
    q1, q2, q3, w0 = payload['questions']
    assert q1 == dict(OUTPUTS[0], rank=dict(dsd=1, attention=5, itm=2))
    assert q3['rank'] == dict(dsd=1, attention=6, itm=1)
    assert q2['rank'] == dict(dsd=2, attention=6, itm=2) and math.isnan(q2['scores']['itm'][0])
    assert q3['scores']['dsd'] == [1.0, 0, 0, 0, 0, 0] and q3['target'] == 0
    assert w0['winoground']['dsd'] == dict(text=False, image=True, group=False)
    recomputed = metrics_from_dump(out)
    assert {f'itm/{k}': v for k, v in recomputed.items()} == metrics
    assert metrics['itm/dsd/image_score'] == 100.0 and metrics['itm/itm/group_score'] == 0.0
    assert retrieval_metrics(payload['questions'][:1], ['dsd'], [1]) == {'dsd/accuracy': 100.0,
                                                                         'dsd/R@1': 100.0}


def test_tools_test_out_json_uses_the_question_dump(tmp_path, tools_kit):
    test = tools_kit.load('test')
    out = str(tmp_path / 'questions.json')
    cfg = Config(dict(default_scope='mmengine',
                      test_evaluator=dict(type='ITMRetrievalMetric', scores=('dsd', ))))
    assert test.add_output(cfg, out) is True
    assert cfg.test_evaluator['dump_pairs'] == osp.abspath(out)
