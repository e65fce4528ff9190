"""The DMD digits demo: the recognition rule, the v-prediction teacher trainer, the proxy scorer,
and ``tools/demo_dmd.py --quick`` end to end on a tiny teacher."""
import json
import math
import os.path as osp

import pytest
import torch

from generation_dmd.demo.digits_classifier import (DigitsClassifierError, DigitsCNN,
                                                   load_digits_classifier, recognised,
                                                   save_digits_classifier)
from generation_dmd.demo.evaluate import PROXY_KEY, PROXY_NAME, DigitsJudge, timed_generate
from tests.helpers.tiny_models import save_ddpm_pipeline

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _logits_with_top_probability(p, classes=10):
    """float64 logits whose softmax is ``[p, (1 - p) / (K - 1), ...]`` exactly (log-probs)."""
    probs = torch.full((classes, ), (1 - p) / (classes - 1), dtype=torch.float64)
    probs[3] = p
    return probs.log()


# ------------------------------------------------------------------------ recognition rule
def test_recognised_is_top_probability_at_least_0_9_whatever_the_class():
    logits = torch.stack([_logits_with_top_probability(p) for p in
                          (0.95, 0.9001, 0.8999, 0.6, 0.1 + 1e-9)])
    assert recognised(logits).tolist() == [True, True, False, False, False]
    # the class does not matter, only the confidence
    assert recognised(logits.roll(4, dims=1)).tolist() == [True, True, False, False, False]
    assert recognised(logits, threshold=0.5).tolist() == [True, True, True, True, False]
    with pytest.raises(DigitsClassifierError, match=r'threshold=1.5 must be in \(0, 1\]'):
        recognised(logits, threshold=1.5)


def test_classifier_round_trip_and_bad_input(tmp_path):
    torch.manual_seed(0)
    model = DigitsCNN(width=4, feature_dim=8, image_size=8).eval()
    save_digits_classifier(model, str(tmp_path / 'clf'), info=dict(test_accuracy=1.0))
    again, info = load_digits_classifier(str(tmp_path / 'clf'))
    x = torch.rand(3, 3, 8, 8) * 2 - 1
    assert torch.equal(again(x), model(x)) and info == dict(test_accuracy=1.0)
    assert model.features(x).shape == (3, 8)
    # uint8 images are mapped to [-1, 1] first
    u = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    torch.testing.assert_close(model(u), model(u.float() / 127.5 - 1))
    with pytest.raises(DigitsClassifierError, match=r'expected \(batch, 3, 8, 8\)'):
        model(torch.zeros(2, 3, 16, 16))
    with pytest.raises(DigitsClassifierError, match='is not a digits classifier folder'):
        load_digits_classifier(str(tmp_path / 'missing'))


# ------------------------------------------------------------------------ proxy scorer
def test_judge_scores_real_digits_near_zero_and_counts_recognised():
    torch.manual_seed(0)
    model = DigitsCNN(width=4, feature_dim=8, image_size=8).eval()
    judge = DigitsJudge(model)
    from generation_dmd.demo.digits_classifier import digits_tensors
    test, _ = digits_tensors('test', 8)
    same = judge.score(test)  # the reference set itself: distance 0 up to round-off
    assert same[PROXY_KEY] == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        expected = 100.0 * recognised(model(test)).float().mean().item()
    assert same['recognised_pct'] == pytest.approx(expected)
    assert sum(same['predicted_classes']) == 600
    noise = judge.score(torch.rand(64, 3, 8, 8) * 2 - 1)
    assert noise[PROXY_KEY] > 0
    assert 'not FID' in PROXY_NAME and 'proxy' in PROXY_NAME


def test_timed_generate_clips_and_counts_images():
    seen = []

    def sample(z):
        seen.append(z.shape[0])
        return z * 10

    images, per_second = timed_generate(sample, list(range(5)), 2,
                                        lambda s: torch.ones(len(s), 1, 2, 2))
    assert seen == [2, 2, 1] and images.shape == (5, 1, 2, 2)
    assert images.max() == 1.0 and per_second > 0


# ------------------------------------------------------------------------ the demo, end to end
def test_demo_quick_runs_end_to_end(tools_kit, tmp_path):
    teacher = save_ddpm_pipeline(str(tmp_path / 'teacher'), sample_size=8)
    work = tmp_path / 'demo'
    proc = tools_kit.run(['tools/demo_dmd.py', '--quick', '--teacher', teacher, '--work-dir',
                          str(work)], cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.output[-4000:]
    with open(work / 'results.json', encoding='utf-8') as f:
        results = json.load(f)
    assert results['proxy_metric'] == PROXY_NAME
    assert results['quick'] is True and results['num_images'] == 16
    assert list(results['rows']) == ['teacher_heun', 'teacher_one_step', 'dmd_generator',
                                     'real_train_digits']
    for name, row in results['rows'].items():
        assert math.isfinite(row[PROXY_KEY]) and row[PROXY_KEY] >= 0, name
        assert 0 <= row['recognised_pct'] <= 100 and sum(row['predicted_classes']) == 16
        assert osp.isfile(row['grid'])
    assert results['rows']['teacher_heun']['nfe'] == 35
    assert results['rows']['dmd_generator']['nfe'] == 1
    assert all(results['rows'][n]['images_per_s'] > 0 for n in ('teacher_heun',
                                                                 'teacher_one_step',
                                                                 'dmd_generator'))
    assert osp.isfile(osp.join(results['dmd']['generator'], 'generator.json'))
    for label in ('teacher, Heun 18 steps', 'teacher, 1 step', 'DMD generator, 1 step',
                  'real digits (train split'):
        assert label in proc.stdout
    assert PROXY_NAME in proc.stdout
    # a second run reuses the classifier, the pairs and the distilled generator
    again = tools_kit.run(['tools/demo_dmd.py', '--quick', '--teacher', teacher, '--work-dir',
                           str(work)], cwd=REPO, timeout=300)
    assert again.returncode == 0, again.output[-4000:]
    for what in ('digits classifier exists', 'teacher pairs exist', 'DMD generator exists'):
        assert what in again.stdout
