"""correspondence.models.losses: similarity-map distillation kinds against independent
re-computations, DistillDIFT's released (defective) loss reproduced, valid-row masking, -inf
entries, half inputs, gradients to the student only, and the supervised keypoint losses."""
import math

import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import MODELS

from correspondence.models.losses import (KeypointCELoss, SimilarityDistillLoss,
                                          SoftArgmaxMSELoss, bilinear_cell_labels,
                                          cosine_similarity)

KINDS = ('ce', 'kl', 'sce', 'infonce', 'mse', 'reference_ce')


def _maps(b=2, n=5, m=7, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, n, m, generator=g, dtype=dtype) * 2 - 1,
            torch.rand(b, n, m, generator=g, dtype=dtype) * 2 - 1)


# ---------------------------------------------------------------- explicit per-row references
def _row_ce(s_row, t_row, temp, t_temp):
    """-sum_j p_T(j) log p_S(j), written out with exp/log over Python floats."""
    zs = sum(math.exp(v / temp) for v in s_row)
    zt = sum(math.exp(v / t_temp) for v in t_row)
    return -sum(math.exp(tv / t_temp) / zt * (sv / temp - math.log(zs))
                for sv, tv in zip(s_row, t_row))


def _row_entropy(t_row, t_temp):
    zt = sum(math.exp(v / t_temp) for v in t_row)
    probs = [math.exp(v / t_temp) / zt for v in t_row]
    return -sum(p * math.log(p) for p in probs)


# ---------------------------------------------------------------- cosine similarity
def test_cosine_similarity_matches_pairwise_cosine_and_is_float32_for_half():
    g = torch.Generator().manual_seed(1)
    src, trg = torch.randn(2, 3, 4, generator=g), torch.randn(2, 5, 4, generator=g)
    sim = cosine_similarity(src, trg)
    expected = F.cosine_similarity(src[:, :, None], trg[:, None], dim=-1)
    assert sim.shape == (2, 3, 5) and sim.dtype == torch.float32
    torch.testing.assert_close(sim, expected)
    half = cosine_similarity(src.half(), trg.half())
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, expected, atol=2e-3, rtol=0)
    assert cosine_similarity(src.double(), trg).dtype == torch.float64


def test_cosine_similarity_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r'src_desc must be \[B, N, C\] descriptors; got '
                                         r'\(2, 4, 3, 3\)'):
        cosine_similarity(torch.zeros(2, 4, 3, 3), torch.zeros(2, 5, 4))
    with pytest.raises(ValueError, match='must share the batch size B and the channels C'):
        cosine_similarity(torch.zeros(2, 3, 4), torch.zeros(2, 5, 6))


# ---------------------------------------------------------------- SimilarityDistillLoss kinds
def test_ce_and_kl_match_explicit_sums_with_teacher_temperature():
    s, t = _maps()
    temp, t_temp = 0.3, 0.5
    ce = SimilarityDistillLoss('ce', temperature=temp, teacher_temperature=t_temp)(s, t)
    kl = SimilarityDistillLoss('kl', temperature=temp, teacher_temperature=t_temp)(s, t)
    rows = [(s[b, i].tolist(), t[b, i].tolist()) for b in range(2) for i in range(5)]
    exp_ce = sum(_row_ce(sr, tr, temp, t_temp) for sr, tr in rows) / len(rows)
    exp_h = sum(_row_entropy(tr, t_temp) for _, tr in rows) / len(rows)
    assert ce.item() == pytest.approx(exp_ce, rel=1e-10)
    assert kl.item() == pytest.approx(exp_ce - exp_h, rel=1e-9)
    assert kl.item() > 0


def test_kl_is_zero_when_maps_agree_and_ce_equals_entropy():
    s, _ = _maps()
    loss = SimilarityDistillLoss('kl', temperature=0.1)
    assert loss(s, s.clone()).item() == pytest.approx(0.0, abs=1e-12)
    ce = SimilarityDistillLoss('ce', temperature=0.1)(s, s.clone()).item()
    entropy = sum(_row_entropy(s[b, i].tolist(), 0.1) for b in range(2) for i in range(5)) / 10
    assert ce == pytest.approx(entropy, rel=1e-10)


def test_sce_is_mean_of_row_and_column_cross_entropies():
    s, t = _maps(b=1, n=4, m=6)
    temp = 0.2
    rows = sum(_row_ce(s[0, i].tolist(), t[0, i].tolist(), temp, temp) for i in range(4)) / 4
    cols = sum(_row_ce(s[0, :, j].tolist(), t[0, :, j].tolist(), temp, temp)
               for j in range(6)) / 6
    got = SimilarityDistillLoss('sce', temperature=temp)(s, t).item()
    assert got == pytest.approx(0.5 * (rows + cols), rel=1e-10)


def test_sce_backward_direction_uses_only_valid_source_rows():
    s, t = _maps(b=1, n=4, m=6, seed=3)
    temp = 0.2
    valid = torch.tensor([[True, False, True, True]])
    keep = [0, 2, 3]
    rows = sum(_row_ce(s[0, i].tolist(), t[0, i].tolist(), temp, temp) for i in keep) / 3
    cols = sum(_row_ce(s[0, keep, j].tolist(), t[0, keep, j].tolist(), temp, temp)
               for j in range(6)) / 6
    got = SimilarityDistillLoss('sce', temperature=temp)(s, t, valid).item()
    assert got == pytest.approx(0.5 * (rows + cols), rel=1e-10)


def test_infonce_uses_teacher_argmax_as_hard_label():
    s, t = _maps()
    temp = 0.07
    label = t.argmax(-1)
    expected = F.cross_entropy((s / temp).flatten(0, 1), label.flatten())
    got = SimilarityDistillLoss('infonce', temperature=temp)(s, t)
    torch.testing.assert_close(got, expected)
    # Only the argmax matters: a teacher with the same argmax but other values gives the same.
    t2 = torch.full_like(t, -1.0).scatter(-1, label[..., None], 1.0)
    torch.testing.assert_close(SimilarityDistillLoss('infonce', temperature=temp)(s, t2),
                               expected)


def test_mse_is_mean_squared_difference_without_temperature():
    s, t = _maps()
    got = SimilarityDistillLoss('mse', temperature=0.001)(s, t)
    torch.testing.assert_close(got, F.mse_loss(s, t))


def test_reference_ce_reproduces_distilldift_and_differs_from_ce():
    s, t = _maps(n=5, m=7)
    temp = 0.01
    released = torch.nn.CrossEntropyLoss()(torch.softmax(s / temp, -1),
                                           torch.softmax(t / temp, -1))
    # Independent re-computation: classes along dim 1 (source points), softmax input re-softmaxed.
    pred, target = torch.softmax(s / temp, -1), torch.softmax(t / temp, -1)
    by_hand = 0.0
    for b in range(2):
        for j in range(7):
            logz = math.log(sum(math.exp(v) for v in pred[b, :, j].tolist()))
            by_hand -= sum(target[b, i, j].item() * (pred[b, i, j].item() - logz)
                           for i in range(5))
    by_hand /= 2 * 7
    got = SimilarityDistillLoss('reference_ce', temperature=temp)(s, t)
    torch.testing.assert_close(got, released)
    assert got.item() == pytest.approx(by_hand, rel=1e-10)
    ce = SimilarityDistillLoss('ce', temperature=temp)(s, t)
    assert abs(ce.item() - got.item()) > 0.1


def test_reference_ce_with_padding_equals_released_loss_on_valid_rows():
    s, t = _maps(b=1, n=5, m=7)
    valid = torch.tensor([[True, True, False, True, False]])
    keep = valid[0]
    expected = torch.nn.CrossEntropyLoss()(torch.softmax(s[:, keep] / 0.05, -1),
                                           torch.softmax(t[:, keep] / 0.05, -1))
    got = SimilarityDistillLoss('reference_ce', temperature=0.05)(s, t, valid)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize('kind', KINDS)
def test_padded_rows_contribute_nothing_and_mean_runs_over_valid_rows(kind):
    s, t = _maps(b=2, n=4, m=6, seed=5)
    valid = torch.tensor([[True, True, False, True], [False, True, True, False]])
    loss = SimilarityDistillLoss(kind, temperature=0.1)
    base = loss(s, t, valid)
    # Garbage (NaN, inf) in padded rows changes nothing.
    s2, t2 = s.clone(), t.clone()
    s2[~valid], t2[~valid] = float('nan'), float('-inf')
    torch.testing.assert_close(loss(s2, t2, valid), base)
    if kind in ('sce', 'reference_ce'):
        return  # these couple the rows of a pair (softmax over source points)
    # Row-wise kinds: the mean over valid rows equals the loss of the valid rows stacked alone.
    sv, tv = s[valid][None], t[valid][None]
    torch.testing.assert_close(base, loss(sv, tv))


@pytest.mark.parametrize('kind', KINDS)
def test_no_valid_row_gives_zero_loss_with_a_graph(kind):
    s, t = _maps(b=1, n=3, m=4)
    s.requires_grad_(True)
    loss = SimilarityDistillLoss(kind)(s, t, torch.zeros(1, 3, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(s.grad, torch.zeros_like(s))


@pytest.mark.parametrize('kind', KINDS)
def test_gradients_reach_the_student_only_and_minus_inf_cells_give_no_nan(kind):
    s, t = _maps(b=2, n=4, m=6, seed=7, dtype=torch.float32)
    # Cells 4 and 5 of the target are masked out (outside the image) in both maps.
    s[..., 4:], t[..., 4:] = float('-inf'), float('-inf')
    s.requires_grad_(True)
    t.requires_grad_(True)
    loss = SimilarityDistillLoss(kind, temperature=0.1, loss_weight=2.0)(
        s, t, torch.tensor([[True] * 4, [True, True, True, False]]))
    assert torch.isfinite(loss)
    loss.backward()
    assert t.grad is None
    assert torch.isfinite(s.grad).all() and s.grad[..., :4].abs().sum() > 0
    assert torch.equal(s.grad[..., 4:], torch.zeros_like(s.grad[..., 4:]))
    assert torch.equal(s.grad[1, 3], torch.zeros_like(s.grad[1, 3]))  # padded row


@pytest.mark.parametrize('kind', KINDS)
def test_minus_inf_cells_equal_dropping_those_cells(kind):
    s, t = _maps(b=1, n=4, m=6, seed=11)
    s2, t2 = s.clone(), t.clone()
    s2[..., 4:], t2[..., 4:] = float('-inf'), float('-inf')
    loss = SimilarityDistillLoss(kind, temperature=0.1)
    torch.testing.assert_close(loss(s2, t2), loss(s[..., :4], t[..., :4]))


@pytest.mark.parametrize('kind', KINDS)
def test_half_inputs_are_computed_in_float32(kind):
    s, t = _maps(dtype=torch.float32)
    loss = SimilarityDistillLoss(kind, temperature=0.1)
    got = loss(s.half(), t.half())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, loss(s.half().float(), t.half().float()))


def test_loss_weight_scales_and_registry_builds():
    s, t = _maps()
    built = MODELS.build(dict(type='SimilarityDistillLoss', kind='kl', temperature=0.2,
                              loss_weight=3.0))
    assert isinstance(built, SimilarityDistillLoss)
    torch.testing.assert_close(built(s, t), 3.0 * SimilarityDistillLoss('kl', 0.2)(s, t))
    assert "kind='kl'" in repr(built)


def test_distill_loss_errors():
    with pytest.raises(ValueError, match=r"kind='cross_entropy' is not one of \('ce', 'kl', "
                                         r"'sce', 'infonce', 'mse', 'reference_ce'\)"):
        SimilarityDistillLoss('cross_entropy')
    with pytest.raises(ValueError, match='temperature must be a positive number; got 0.0'):
        SimilarityDistillLoss(temperature=0)
    loss = SimilarityDistillLoss()
    with pytest.raises(ValueError, match=r'student_sim \(2, 3, 4\) and teacher_sim \(2, 3, 5\) '
                                         'must have the same'):
        loss(torch.zeros(2, 3, 4), torch.zeros(2, 3, 5))
    with pytest.raises(ValueError, match=r'teacher_sim must be a \[B, N, M\] similarity map'):
        loss(torch.zeros(2, 3, 4), torch.zeros(6, 4))
    with pytest.raises(ValueError, match=r'valid must be a bool \[B, N\] = \[2, 3\] mask'):
        loss(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.ones(2, 3))


# ---------------------------------------------------------------- KeypointCELoss
def test_keypoint_ce_one_direction_and_symmetric():
    g = torch.Generator().manual_seed(2)
    fwd, back = torch.rand(2, 3, 12, generator=g), torch.rand(2, 3, 12, generator=g)
    trg_cells = torch.tensor([[0, 5, 11], [3, 3, 7]])
    src_cells = torch.tensor([[1, 2, 3], [10, 9, 0]])
    valid = torch.tensor([[True, True, True], [True, False, True]])
    temp = 0.07
    exp_fwd = F.cross_entropy((fwd / temp)[valid], trg_cells[valid])
    exp_back = F.cross_entropy((back / temp)[valid], src_cells[valid])
    one_way = KeypointCELoss(temperature=temp, symmetric=False)
    torch.testing.assert_close(one_way(fwd, trg_cells, valid), exp_fwd)
    both = MODELS.build(dict(type='KeypointCELoss', temperature=temp, loss_weight=2.0))
    torch.testing.assert_close(both(fwd, trg_cells, valid, back, src_cells),
                               exp_fwd + exp_back)  # 2 x the mean of the two directions
    with pytest.raises(ValueError, match='symmetric=True needs trg_to_src'):
        both(fwd, trg_cells, valid)


def test_keypoint_ce_bilinear_labels():
    labels = bilinear_cell_labels(torch.tensor([[[1.0, 0.0], [0.25, 1.5], [9.0, -3.0]]]), (2, 3))
    # (1, 0) is cell 1; (0.25, 1.5): row clamped to the last row 1, col 0.25 -> cells 3 and 4
    # with 0.75 / 0.25; (9, -3) clamps to the corner cell 2.
    expected = torch.tensor([[[0, 1, 0, 0, 0, 0],
                              [0, 0, 0, 0.75, 0.25, 0],
                              [0, 0, 1, 0, 0, 0]]])
    torch.testing.assert_close(labels, expected)
    g = torch.Generator().manual_seed(4)
    sim = torch.rand(1, 2, 6, generator=g)
    pos = torch.tensor([[[2.0, 1.0], [0.5, 0.0]]])
    loss = KeypointCELoss(symmetric=False, label='bilinear')
    got = loss(sim, pos, grid_hw=(2, 3))
    log_p = torch.log_softmax(sim / 0.07, -1)[0]
    expected_loss = 0.5 * (-log_p[0, 5] - 0.5 * (log_p[1, 0] + log_p[1, 1]))
    torch.testing.assert_close(got, expected_loss)
    with pytest.raises(ValueError, match=r"label='bilinear' needs grid_hw=\(h, w\) with h \* w "
                                         '= 6'):
        loss(sim, pos)


def test_keypoint_ce_errors_and_gradients():
    loss = KeypointCELoss(symmetric=False)
    sim = torch.rand(1, 2, 4, requires_grad=True)
    with pytest.raises(ValueError, match=r'trg_cells holds indices outside 0..3'):
        loss(sim, torch.tensor([[0, 4]]))
    with pytest.raises(ValueError, match=r'trg_cells must be a long \[B, N\] = \[1, 2\]'):
        loss(sim, torch.tensor([[0.0, 1.0]]))
    with pytest.raises(ValueError, match="label='soft' is not one of"):
        KeypointCELoss(label='soft')
    out = loss(sim.half(), torch.tensor([[0, 3]]))
    assert out.dtype == torch.float32
    out.backward()
    assert torch.isfinite(sim.grad).all() and sim.grad.abs().sum() > 0


# ---------------------------------------------------------------- SoftArgmaxMSELoss
def test_soft_argmax_mse_hand_computed_and_no_jitter_in_eval():
    # 2 x 2 grid, beta 1: weights exp(0), exp(0), exp(0), exp(ln 2) = 1, 1, 1, 2 (sum 5) on cells
    # (col, row) = (0,0), (1,0), (0,1), (1,1) -> expected (0.6, 0.6). Target (0, 1):
    # ((0.6 - 0)^2 + (0.6 - 1)^2) / 2 = 0.26.
    sim = torch.tensor([[[0.0, 0.0, 0.0, math.log(2.0)]]])
    loss = SoftArgmaxMSELoss(beta=1.0, jitter=5.0).eval()
    torch.testing.assert_close(loss.expected_position(sim, (2, 2)),
                               torch.tensor([[[0.6, 0.6]]]))
    target = torch.tensor([[[0.0, 1.0]]])
    assert loss(sim, (2, 2), target).item() == pytest.approx(0.26, rel=1e-6)
    assert loss(sim, (2, 2), target, generator=torch.Generator().manual_seed(0)).item() == \
        pytest.approx(0.26, rel=1e-6)


def test_soft_argmax_mse_jitter_in_training_is_seeded_gaussian():
    g = torch.Generator().manual_seed(8)
    sim = torch.rand(2, 3, 12, generator=g)
    target = torch.rand(2, 3, 2, generator=g) * 3
    valid = torch.tensor([[True, True, False], [True, True, True]])
    loss = SoftArgmaxMSELoss(beta=50.0, jitter=0.5)  # training mode by default
    got = loss(sim, (3, 4), target, valid, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(2, 3, 2, generator=torch.Generator().manual_seed(1))
    pred = loss.expected_position(sim, (3, 4))
    expected = ((pred - target - 0.5 * noise) ** 2).mean(-1)[valid].mean()
    torch.testing.assert_close(got, expected)
    again = loss(sim, (3, 4), target, valid, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(again, got)
    plain = ((pred - target) ** 2).mean(-1)[valid].mean()
    assert abs(got.item() - plain.item()) > 1e-3
    torch.testing.assert_close(loss.eval()(sim, (3, 4), target, valid), plain)


def test_soft_argmax_mse_gradients_minus_inf_and_errors():
    sim = torch.rand(1, 2, 6)
    sim[0, :, 5] = float('-inf')  # a masked cell
    sim.requires_grad_(True)
    target = torch.tensor([[[1.0, 0.0], [2.0, 1.0]]], requires_grad=True)
    loss = SoftArgmaxMSELoss(beta=10.0)
    out = loss(sim.half(), (2, 3), target, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32 and torch.isfinite(out)
    out.backward()
    assert target.grad is None
    assert torch.isfinite(sim.grad).all() and sim.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r'grid_hw=\(2, 2\) must be the target grid'):
        loss(sim, (2, 2), target)
    with pytest.raises(ValueError, match=r'target must be a float \[B, N, 2\] = \[1, 2, 2\]'):
        loss(sim, (2, 3), target[..., 0])
    with pytest.raises(ValueError, match='jitter=-1 must be >= 0'):
        SoftArgmaxMSELoss(jitter=-1)
