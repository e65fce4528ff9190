"""Distillation losses against hand computations on tiny tensors."""
import math

import numpy as np
import pytest
import torch
from mmengine.registry import MODELS

from common.distill.losses import (AttentionTransferLoss, CosineDistanceLoss, DenseL1Loss,
                                   DenseMSELoss, FitNetHintLoss, LogitKDLoss, PooledMSELoss,
                                   RelationalKDLoss)

# name -> (loss kwargs, student shape, teacher shape); used by the generic tests below
CASES = {
    'PooledMSELoss': (dict(), (3, 4, 5, 5), (3, 4, 2, 2)),
    'DenseMSELoss': (dict(), (2, 3, 4, 4), (2, 3, 4, 4)),
    'DenseL1Loss': (dict(), (2, 3, 4, 4), (2, 3, 4, 4)),
    'FitNetHintLoss': (dict(), (2, 3, 4, 4), (2, 3, 4, 4)),
    'CosineDistanceLoss': (dict(), (2, 3, 4, 4), (2, 3, 4, 4)),
    'AttentionTransferLoss': (dict(p=2), (2, 3, 8, 8), (2, 5, 4, 4)),
    'RelationalKDLoss': (dict(), (5, 6, 3, 3), (5, 4)),
    'LogitKDLoss': (dict(temperature=3.0), (4, 7), (4, 7)),
}


def build(name, **kwargs):
    return MODELS.build(dict(type=name, **CASES[name][0], **kwargs))


def pair(name, seed=0):
    gen = torch.Generator().manual_seed(seed)
    _, s_shape, t_shape = CASES[name]
    return torch.randn(s_shape, generator=gen), torch.randn(t_shape, generator=gen)


def as_t(array):
    return torch.tensor(np.asarray(array), dtype=torch.float32)


# ---------------------------------------------------------------- hand computations


def test_pooled_mse_two_samples_by_hand():
    student = torch.zeros(2, 2, 2, 2)
    student[0, 0] = as_t([[1, 2], [3, 4]])  # mean 2.5
    student[1, 0] = 1.0  # mean 1
    student[1, 1] = as_t([[0, 0], [0, 4]])  # mean 1; student[0, 1] is 0
    teacher = as_t([[0.5, 1.0], [1.0, -1.0]])  # already pooled [B, C]
    # differences 2, -1, 0, 2 -> squares 4, 1, 0, 4 -> mean 9 / 4
    loss = PooledMSELoss()(student, teacher)
    assert loss.dim() == 0
    assert loss.item() == pytest.approx(2.25)
    # a 4-D teacher of another spatial size pools to the same vectors
    teacher_map = teacher[:, :, None, None].expand(2, 2, 3, 3)
    assert PooledMSELoss()(student, teacher_map).item() == pytest.approx(2.25)


def test_dense_mse_and_l1_by_hand():
    student = as_t([[1, 2], [3, 4]]).view(1, 1, 2, 2)
    teacher = as_t([[1, 0], [5, 4]]).view(1, 1, 2, 2)  # differences 0, 2, -2, 0
    assert DenseMSELoss()(student, teacher).item() == pytest.approx(8 / 4)
    assert DenseL1Loss()(student, teacher).item() == pytest.approx(4 / 4)
    assert DenseL1Loss(loss_weight=10)(student, teacher).item() == pytest.approx(10.0)
    assert FitNetHintLoss()(student, teacher).item() == pytest.approx(2.0)
    assert isinstance(FitNetHintLoss(), DenseMSELoss)


def test_cosine_distance_by_hand_and_minimised():
    student = as_t([[1, 0], [1, 1]])
    teacher = as_t([[0, 1], [2, 2]])  # cosines 0 and 1 -> distances 1 and 0
    assert CosineDistanceLoss()(student, teacher).item() == pytest.approx(0.5)
    # per position along channels for maps: only position (0, 1) of sample 1 is opposite
    s_map = torch.ones(2, 3, 1, 2)
    t_map = s_map.clone()
    t_map[1, :, 0, 1] = -2.0
    assert CosineDistanceLoss()(s_map, t_map).item() == pytest.approx(2.0 / 4)
    # minimised: a gradient step towards the teacher lowers it
    s = student.clone().requires_grad_()
    loss = CosineDistanceLoss()(s, teacher)
    loss.backward()
    with torch.no_grad():
        after = CosineDistanceLoss()(s - 0.1 * s.grad, teacher)
    assert after < loss


def attention_by_hand(x, p):
    """[B, C, H, W] numpy -> [B, H*W]: mean over channels of |x|^p, L2-normalised per sample."""
    b, c, h, w = x.shape
    maps = np.zeros((b, h * w))
    for i in range(b):
        for y in range(h):
            for z in range(w):
                maps[i, y * w + z] = sum(abs(x[i, k, y, z])**p for k in range(c)) / c
        maps[i] /= math.sqrt(sum(v * v for v in maps[i]))
    return maps


@pytest.mark.parametrize('p', [1, 2, 4])
def test_attention_transfer_explicit_formula(p):
    student, teacher = pair('DenseMSELoss', seed=p)
    teacher = teacher[:, :2]  # channel counts may differ
    q_s = attention_by_hand(student.double().numpy(), p)
    q_t = attention_by_hand(teacher.double().numpy(), p)
    expected = ((q_s - q_t)**2).sum() / q_s.size  # mean over batch and positions
    loss = AttentionTransferLoss(p=p)(student, teacher)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_attention_transfer_resizes_student_map_by_hand():
    student = torch.full((1, 3, 2, 2), 2.0)  # constant map -> 1/4 at each of 16 positions
    teacher = torch.zeros(1, 5, 4, 4)
    teacher[0, 1, 2, 3] = 7.0  # one-hot map after normalisation
    expected = (15 * (1 / 4)**2 + (1 - 1 / 4)**2) / 16
    assert AttentionTransferLoss()(student, teacher).item() == pytest.approx(expected)
    # and against the formula with the map resized explicitly (smaller student than teacher)
    student, teacher = pair('AttentionTransferLoss')
    small = torch.randn(2, 3, 3, 3)
    a_s = small.pow(2).mean(1, keepdim=True)
    a_s = torch.nn.functional.interpolate(a_s, size=(4, 4), mode='bilinear', align_corners=False)
    q_s = torch.nn.functional.normalize(a_s.flatten(1), dim=1)
    q_t = torch.nn.functional.normalize(teacher.pow(2).mean(1).flatten(1), dim=1)
    expected = (q_s - q_t).pow(2).mean()
    torch.testing.assert_close(AttentionTransferLoss()(small, teacher), expected)


def huber(x):
    x = abs(x)
    return 0.5 * x * x if x < 1 else x - 0.5


def rkd_by_hand(s, t, w_d=25.0, w_a=50.0):
    """Explicit loops over pairs and triplets, numpy float64."""

    def distances(e):
        n = len(e)
        d = np.array([[np.linalg.norm(e[i] - e[j]) for j in range(n)] for i in range(n)])
        off = [d[i, j] for i in range(n) for j in range(n) if i != j]
        return d / np.mean(off)

    def angles(e):
        n = len(e)
        a = np.zeros((n, n, n))
        for j in range(n):
            for i in range(n):
                for k in range(n):
                    if i == j or k == j:
                        continue
                    u, v = e[i] - e[j], e[k] - e[j]
                    a[j, i, k] = u @ v / (np.linalg.norm(u) * np.linalg.norm(v))
        return a

    d_s, d_t = distances(s), distances(t)
    a_s, a_t = angles(s), angles(t)
    loss_d = np.mean([huber(x) for x in (d_s - d_t).ravel()])
    loss_a = np.mean([huber(x) for x in (a_s - a_t).ravel()])
    return w_d * loss_d + w_a * loss_a


def test_rkd_against_loops():
    gen = torch.Generator().manual_seed(3)
    student = torch.randn(5, 6, 3, 3, generator=gen)
    teacher = torch.randn(5, 4, generator=gen) * 3
    expected = rkd_by_hand(student.double().mean((2, 3)).numpy(), teacher.double().numpy())
    loss = RelationalKDLoss()(student, teacher)
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    # angle/distance weights enter linearly
    only_d = RelationalKDLoss(distance_weight=1.0, angle_weight=0.0)(student, teacher)
    expected_d = rkd_by_hand(student.double().mean((2, 3)).numpy(), teacher.double().numpy(),
                             w_d=1.0, w_a=0.0)
    assert only_d.item() == pytest.approx(expected_d, rel=1e-4)
    # spread-out points: some distance differences exceed 1 (the linear branch of smooth-L1)
    spread = torch.arange(5.).pow(3).view(5, 1).repeat(1, 2)
    loss_fn = RelationalKDLoss()
    d_gap = loss_fn.normalised_distances(spread) - loss_fn.normalised_distances(teacher)
    assert d_gap.abs().max() > 1
    expected = rkd_by_hand(spread.double().numpy(), teacher.double().numpy())
    assert loss_fn(spread, teacher).item() == pytest.approx(expected, rel=1e-4)


def test_rkd_is_invariant_to_scale_and_extra_zero_dims():
    teacher = torch.randn(6, 4)
    student = torch.cat([3 * teacher, torch.zeros(6, 5)], dim=1)  # same geometry, scaled
    assert RelationalKDLoss()(student, teacher).item() == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize('batch', [1, 2])
def test_rkd_small_batches_are_finite(batch):
    student = torch.randn(batch, 3, 2, 2, requires_grad=True)
    teacher = torch.randn(batch, 5)
    loss = RelationalKDLoss()(student, teacher)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all()
    if batch == 1:
        assert loss.item() == 0.0
    else:  # B = 2: both normalised distances are 1, every angle is degenerate
        assert loss.item() == pytest.approx(0.0, abs=1e-6)
    expected = rkd_by_hand(student.detach().double().mean((2, 3)).numpy(),
                           teacher.double().numpy()) if batch == 2 else 0.0
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_rkd_duplicate_samples_give_finite_gradients():
    base = torch.randn(2, 4)
    student = torch.cat([base, base[:1]]).requires_grad_()  # samples 0 and 2 coincide
    teacher = torch.randn(3, 4)
    loss = RelationalKDLoss()(student, teacher)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all()
    identical = torch.ones(3, 4, requires_grad=True)  # all distances zero
    loss = RelationalKDLoss()(identical, teacher)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(identical.grad).all()


def test_logit_kd_written_out():
    student = as_t([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    teacher = as_t([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    temp = 2.0

    def log_softmax(row):
        row = np.asarray(row, dtype=np.float64) / temp
        return row - math.log(sum(math.exp(v) for v in row))

    total = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        log_p_s, log_p_t = log_softmax(s_row), log_softmax(t_row)
        total += sum(math.exp(lt) * (lt - ls) for ls, lt in zip(log_p_s, log_p_t))
    expected = total / 2 * temp**2  # batch mean, times T^2
    loss = LogitKDLoss(temperature=temp)(student, teacher)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # the same number from F.kl_div on probabilities (input log p_s, target p_t)
    p_t = torch.softmax(teacher / temp, 1)
    ref = torch.nn.functional.kl_div(
        torch.log_softmax(student / temp, 1), p_t, reduction='batchmean') * temp**2
    torch.testing.assert_close(loss, ref)


def test_logit_kd_rejects_bad_input():
    with pytest.raises(ValueError, match='temperature'):
        LogitKDLoss(temperature=0)
    with pytest.raises(ValueError, match=r'\(2, 3\).*\(2, 4\)'):
        LogitKDLoss()(torch.randn(2, 3), torch.randn(2, 4))


# ---------------------------------------------------------------- properties of every loss


@pytest.mark.parametrize('name', sorted(CASES))
def test_builds_and_returns_weighted_scalar(name):
    student, teacher = pair(name)
    base = build(name)(student, teacher)
    scaled = build(name, loss_weight=3.0)(student, teacher)
    assert base.dim() == 0 and base.item() > 0
    torch.testing.assert_close(scaled, 3.0 * base)


@pytest.mark.parametrize('name', sorted(CASES))
def test_zero_when_student_equals_teacher(name):
    student, _ = pair(name)
    assert build(name)(student, student.clone()).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize('name', sorted(CASES))
def test_gradients_reach_student_only(name):
    student, teacher = pair(name)
    student.requires_grad_()
    teacher.requires_grad_()
    build(name)(student, teacher).backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert torch.isfinite(student.grad).all()


@pytest.mark.parametrize('name', [
    'PooledMSELoss', 'DenseMSELoss', 'DenseL1Loss', 'FitNetHintLoss', 'CosineDistanceLoss'
])
def test_shape_mismatch_names_both_shapes(name):
    student = torch.randn(2, 3, 4, 4)
    teacher = torch.randn(2, 5, 4, 4)
    with pytest.raises(ValueError, match=rf'{name}.*\(2, 3, 4, 4\).*\(2, 5, 4, 4\)'):
        build(name)(student, teacher)


def test_dense_spatial_mismatch_is_an_error():
    with pytest.raises(ValueError, match=r'\(2, 3, 4, 4\).*\(2, 3, 8, 8\).*align_spatial'):
        DenseL1Loss()(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 8, 8))


def test_batch_mismatch_is_an_error():
    with pytest.raises(ValueError, match='batch'):
        AttentionTransferLoss()(torch.randn(2, 3, 4, 4), torch.randn(3, 3, 4, 4))
    with pytest.raises(ValueError, match='batch'):
        RelationalKDLoss()(torch.randn(2, 3), torch.randn(3, 3))


# ---------------------------------------------------------------- target_norm='batch'


def test_pooled_target_norm_batch_by_hand():
    # pooled teacher, one channel: values 1, 3 over the batch -> mean 2, biased var 1 -> -1, +1
    # second channel: 10, 10 -> var 0 -> (0, 0) (eps keeps it finite)
    teacher = as_t([[1.0, 10.0], [3.0, 10.0]])
    student = as_t([[0.0, 0.0], [0.0, 0.0]])
    loss = PooledMSELoss(target_norm='batch')(student, teacher)
    # squares: 1, 0, 1, 0 -> mean 0.5 (up to eps: (1/sqrt(1+1e-5))^2)
    assert loss.item() == pytest.approx(0.5 / (1 + 1e-5), rel=1e-6)
    # an offset shared by every image is invisible to the normalised loss, not to the raw one
    shifted = teacher + 100.0
    assert PooledMSELoss(target_norm='batch')(student, shifted).item() == pytest.approx(
        loss.item(), rel=1e-6)
    assert PooledMSELoss()(student, shifted).item() > 1e4


def test_dense_target_norm_standardises_over_batch_and_positions():
    gen = torch.Generator().manual_seed(0)
    teacher = 5 + 3 * torch.randn(4, 2, 3, 3, generator=gen)
    student = torch.zeros(4, 2, 3, 3)
    target = teacher.clone()
    for c in range(2):  # written out: mean and biased std over (B, H, W) of channel c
        values = teacher[:, c].reshape(-1)
        target[:, c] = (teacher[:, c] - values.mean()) / torch.sqrt(
            ((values - values.mean())**2).mean() + 1e-5)
    expected_l2 = (target**2).mean().item()
    expected_l1 = target.abs().mean().item()
    assert DenseMSELoss(target_norm='batch')(student, teacher).item() == pytest.approx(
        expected_l2, rel=1e-5)
    assert DenseL1Loss(target_norm='batch')(student, teacher).item() == pytest.approx(
        expected_l1, rel=1e-5)
    assert expected_l2 == pytest.approx(1.0, rel=1e-4)  # a standardised target has unit power


def test_target_norm_typo_is_a_clear_error():
    with pytest.raises(ValueError, match=r"target_norm='bacth'.*None.*'batch'"):
        MODELS.build(dict(type='PooledMSELoss', target_norm='bacth'))


def test_target_norm_keeps_gradients_off_the_teacher():
    student = torch.randn(4, 3, requires_grad=True)
    teacher = torch.randn(4, 3, requires_grad=True)
    PooledMSELoss(target_norm='batch')(student, teacher).backward()
    assert student.grad is not None and teacher.grad is None


# ---------------------------------------------------------------- target_norm='batch', batch of 1


@pytest.mark.parametrize('name, shape', [('PooledMSELoss', (1, 2, 3, 3)),
                                         ('DenseMSELoss', (1, 2, 3, 3)),
                                         ('DenseL1Loss', (1, 2, 3, 3)),
                                         ('FitNetHintLoss', (1, 2, 3, 3))])
def test_target_norm_batch_refuses_a_batch_of_one(name, shape):
    # Before: the pooled target of one image standardised over the batch is (x - x) / sqrt(eps)
    # = all zeros, and a dense one is standardised over that image's H×W only.
    loss = MODELS.build(dict(type=name, target_norm='batch'))
    with pytest.raises(ValueError, match=r"one sample.*drop_last=True.*single_sample='skip'"):
        loss(torch.randn(*shape), torch.randn(*shape))
    # the raw target (RepFusion) is unaffected: loss = mean((s - t)^2) or mean(|s - t|)
    raw = MODELS.build(dict(type=name))
    student, teacher = torch.full(shape, 1.0), torch.full(shape, 3.0)
    assert raw(student, teacher).item() == pytest.approx(2.0 if name == 'DenseL1Loss' else 4.0)


@pytest.mark.parametrize('name', ['PooledMSELoss', 'DenseMSELoss', 'DenseL1Loss'])
def test_single_sample_skip_gives_a_zero_loss_with_a_graph(name):
    loss = MODELS.build(dict(type=name, target_norm='batch', single_sample='skip', loss_weight=5))
    student = torch.randn(1, 2, 3, 3, requires_grad=True)
    value = loss(student, torch.randn(1, 2, 3, 3))
    assert value.item() == 0.0
    value.backward()
    assert torch.equal(student.grad, torch.zeros_like(student))
    # batches of two are standardised as before: pooled values 1, 3 -> targets -1, +1 (up to eps)
    teacher = as_t([[1.0], [3.0]])[:, :, None, None].expand(2, 1, 2, 2)
    student = torch.zeros(2, 1, 2, 2)
    expected = 1 / math.sqrt(1 + 1e-5)  # every |target| is 1/sqrt(1 + eps)
    got = loss(student, teacher).item() / 5
    assert got == pytest.approx(expected if name == 'DenseL1Loss' else expected**2, rel=1e-6)


def test_single_sample_typo_is_a_clear_error():
    with pytest.raises(ValueError, match=r"single_sample='skipp'.*'error'.*'skip'"):
        MODELS.build(dict(type='DenseMSELoss', target_norm='batch', single_sample='skipp'))
