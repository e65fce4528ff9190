"""correspondence.matching: cosine NN, mutual NN, window and kernel soft-argmax (with the
-inf vs zero mask difference), sub-pixel mapping to target pixels, chunking and batching."""
import math
import time

import pytest
import torch
from mmengine.registry import MODELS

from correspondence.geometry import grid_to_pixels
from correspondence.matching import (argmax_match, kernel_soft_argmax, match_keypoints,
                                     mutual_nn, sample_descriptors, similarity,
                                     window_soft_argmax)


def _flat(grid):
    return grid.reshape(1, 1, -1).double()


# ---------------------------------------------------------------- descriptors, similarity, NN
def test_sample_descriptors_at_cell_centres_is_exact():
    feat = torch.randn(2, 3, 4, 5)
    cols, rows = torch.meshgrid(torch.arange(5), torch.arange(4), indexing='xy')
    cells = torch.stack([cols.flatten(), rows.flatten()], -1)  # (col, row), row-major
    kps = grid_to_pixels(cells, (4, 5), (50, 40)).float()[None].expand(2, -1, -1)
    expected = feat.flatten(2).transpose(1, 2)
    for mode in ('bilinear', 'nearest'):
        torch.testing.assert_close(sample_descriptors(feat, kps, (50, 40), mode=mode), expected)


def test_sample_descriptors_bilinear_between_cells_and_nearest_cell():
    feat = torch.arange(4.0).reshape(1, 1, 1, 4)  # cells 0..3 over a 40 x 10 frame
    kps = torch.tensor([[[9.5, 4.5], [12.0, 4.5], [0.0, 0.0], [39.0, 9.0]]])
    out = sample_descriptors(feat, kps, (40, 10))[0, :, 0]
    # pixel 9.5 is half-way between centres 4.5 and 14.5; 12.0 is 0.75 of the way.
    # Border padding: keypoints beyond the first/last centre read the edge cells.
    torch.testing.assert_close(out, torch.tensor([0.5, 0.75, 0.0, 3.0]))
    near = sample_descriptors(feat, kps, (40, 10), mode='nearest')[0, :, 0]
    torch.testing.assert_close(near, torch.tensor([1.0, 1.0, 0.0, 3.0]))  # 9.5 lies in cell 1
    with pytest.raises(ValueError, match='mode'):
        sample_descriptors(feat, kps, (40, 10), mode='bicubic')


def test_similarity_is_cosine():
    src = torch.tensor([[[3.0, 0.0], [1.0, 1.0]]])
    trg = torch.tensor([[1.0, 0.0], [0.0, 2.0]]).T.reshape(1, 2, 1, 2)  # cells (1,0), (0,2)
    sim = similarity(src, trg)
    r = 1 / math.sqrt(2)
    torch.testing.assert_close(sim, torch.tensor([[[1.0, 0.0], [r, r]]]))


def test_cosine_nn_known_cell_maps_to_patch_centre():
    torch.manual_seed(0)
    h, w, c = 6, 7, 16
    trg = torch.randn(1, c, h, w)
    src = torch.randn(1, c, 3, 3)
    src[0, :, 1, 2] = 10 * trg[0, :, 4, 5]  # scale does not matter for cosine
    src_kp = grid_to_pixels(torch.tensor([[[2, 1]]]), (3, 3), (30, 30)).float()
    for method in ('argmax', 'window_softargmax', 'kernel_softargmax'):
        pred = match_keypoints(src, trg, src_kp, (30, 30), (70, 60), method=method,
                               **({} if method == 'argmax' else dict(beta=1e-4)))
        torch.testing.assert_close(pred, torch.tensor([[[5 * 10 + 4.5, 4 * 10 + 4.5]]]))
    assert argmax_match(similarity(src[:, :, 1, 2][:, None], trg), (h, w)).tolist() == [[[5, 4]]]


def test_mutual_nn_on_a_permutation():
    torch.manual_seed(0)
    n = 12  # 3 x 4 grid, orthogonal descriptors
    basis = torch.linalg.qr(torch.randn(16, 16))[0][:, :n]  # [16, n], orthonormal columns
    perm = torch.randperm(n)
    src = basis.reshape(1, 16, 3, 4)
    trg = basis[:, perm].reshape(1, 16, 3, 4)  # target cell j holds source cell perm[j]
    nn_idx, mutual = mutual_nn(src, trg, chunk=5)
    assert torch.equal(nn_idx[0], torch.argsort(perm))
    assert mutual.all()
    # Two source cells sharing one best target: only the closer one is mutual.
    src2 = torch.tensor([[1.0, 0.0], [1.0, 0.2], [0.0, 1.0]]).T.reshape(1, 2, 1, 3)
    trg2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).T.reshape(1, 2, 1, 2)
    nn_idx, mutual = mutual_nn(src2, trg2)
    assert nn_idx.tolist() == [[0, 0, 1]]
    assert mutual.tolist() == [[True, False, True]]


# ---------------------------------------------------------------- soft-argmax
def test_window_soft_argmax_symmetric_peak_is_exact():
    # A peak symmetric about (col 2.5, row 1) on a 3 x 6 grid: the argmax is a tie (col 2 or 3)
    # and a window of 3 covers the whole grid, so the expectation is the centre of symmetry.
    cols, rows = torch.meshgrid(torch.arange(6.0), torch.arange(3.0), indexing='xy')
    sim = _flat(torch.exp(-((cols - 2.5) ** 2 + (rows - 1) ** 2)))
    out = window_soft_argmax(sim, (3, 6), window=3, beta=0.1)
    torch.testing.assert_close(out, torch.tensor([[[2.5, 1.0]]], dtype=torch.float64))


def test_window_soft_argmax_hand_computed():
    grid = torch.zeros(5, 5)
    grid[2, 2], grid[2, 3], grid[0, 0] = 1.0, 0.5, 0.9  # (0, 0) lies outside a window of 1
    beta = 0.25
    out = window_soft_argmax(_flat(grid), (5, 5), window=1, beta=beta)
    e1, e5 = math.exp(1 / beta), math.exp(0.5 / beta)
    z = e1 + e5 + 7  # seven zero-similarity cells in the 3 x 3 window
    col = (2 * e1 + 3 * e5 + (1 + 1 + 1 + 2 + 2 + 3 + 3)) / z
    row = (2 * e1 + 2 * e5 + (1 + 1 + 1 + 2 + 3 + 3 + 3)) / z
    torch.testing.assert_close(out, torch.tensor([[[col, row]]], dtype=torch.float64))


def test_window_clipped_at_the_border():
    grid = torch.zeros(4, 4)
    grid[0, 0] = 1.0
    out = window_soft_argmax(_flat(grid), (4, 4), window=1, beta=1.0)
    e = math.e
    expected = (0 * e + 0 + 1 + 1) / (e + 3)  # window is cells (0..1) x (0..1)
    torch.testing.assert_close(out, torch.tensor([[[expected, expected]]], dtype=torch.float64))


def test_zero_mask_is_pulled_to_the_centre_and_inf_mask_is_not():
    # 9 x 9 map, a weak peak at (col 7, row 7) with a symmetric 3 x 3 shoulder, negative
    # cosine elsewhere. '-inf' keeps the symmetric in-window expectation, exactly (7, 7).
    # 'zero' sets the 72 outside cells to similarity 0, i.e. weight exp(0) = 1 each, more than
    # the shoulder itself gets, and drags the estimate towards the centre (4, 4).
    beta = 0.1
    grid = torch.full((9, 9), -0.3)
    grid[6:9, 6:9] = 0.05
    grid[7, 7] = 0.1
    sim = _flat(grid)
    inf = window_soft_argmax(sim, (9, 9), window=1, beta=beta, mask='inf')
    torch.testing.assert_close(inf, torch.tensor([[[7.0, 7.0]]], dtype=torch.float64))
    zero = window_soft_argmax(sim, (9, 9), window=1, beta=beta, mask='zero')
    w_peak, w_shoulder = math.exp(0.1 / beta), math.exp(0.05 / beta)
    z = w_peak + 8 * w_shoulder + 72
    outside_sum = 9 * 36 - 9 * 7  # sum of the cols (or rows) of all 81 cells minus the window's
    expected = (7 * w_peak + 8 * 7 * w_shoulder + outside_sum) / z
    torch.testing.assert_close(zero, torch.tensor([[[expected, expected]]], dtype=torch.float64))
    assert 4 < expected < 5  # most of the weight is outside: nearly the centre


def test_kernel_soft_argmax():
    # Peak at the centre cell of a 7 x 7 map, symmetric with the map: exact.
    cols, rows = torch.meshgrid(torch.arange(7.0), torch.arange(7.0), indexing='xy')
    sim = _flat(torch.exp(-((cols - 3) ** 2 + (rows - 3) ** 2)))
    for apply_to in ('logits', 'similarity'):
        out = kernel_soft_argmax(sim, (7, 7), sigma=2.0, beta=0.5, apply_to=apply_to)
        torch.testing.assert_close(out, torch.tensor([[[3.0, 3.0]]], dtype=torch.float64))
    # 1 x 3 map, hand-computed: p ∝ exp(s / beta) * exp(-d^2 / (2 sigma^2)).
    sim = torch.tensor([[[1.0, 0.9, 0.0]]], dtype=torch.float64)
    beta, sigma = 0.5, 1.0
    w = [math.exp(1 / beta), math.exp(0.9 / beta - 0.5), math.exp(0 - 2.0)]
    col = (w[1] + 2 * w[2]) / sum(w)
    out = kernel_soft_argmax(sim, (1, 3), sigma=sigma, beta=beta)
    torch.testing.assert_close(out, torch.tensor([[[col, 0.0]]], dtype=torch.float64))
    # SFNet's form: p = softmax(k * s / beta).
    w = [math.exp(1 / beta), math.exp(math.exp(-0.5) * 0.9 / beta), math.exp(0.0)]
    col = (w[1] + 2 * w[2]) / sum(w)
    out = kernel_soft_argmax(sim, (1, 3), sigma=sigma, beta=beta, apply_to='similarity')
    torch.testing.assert_close(out, torch.tensor([[[col, 0.0]]], dtype=torch.float64))


def test_half_precision_similarity_is_reduced_in_float32():
    sim = torch.rand(1, 2, 12).half()
    assert window_soft_argmax(sim, (3, 4), window=1).dtype == torch.float32
    with pytest.raises(ValueError, match='grid_hw'):
        window_soft_argmax(sim, (3, 5))
    with pytest.raises(ValueError, match='mask'):
        window_soft_argmax(sim, (3, 4), mask='none')


# ---------------------------------------------------------------- batching, chunking, speed
@pytest.mark.parametrize('method,kwargs', [('argmax', {}),
                                           ('window_softargmax', dict(window=2, beta=0.05)),
                                           ('kernel_softargmax', dict(sigma=2.0, beta=0.05))])
def test_chunked_equals_unchunked(method, kwargs):
    torch.manual_seed(0)
    src, trg = torch.randn(2, 8, 9, 9), torch.randn(2, 8, 10, 11)
    kps = torch.rand(2, 23, 2) * 90
    full = match_keypoints(src, trg, kps, (90, 90), (110, 100), method=method, **kwargs)
    part = match_keypoints(src, trg, kps, (90, 90), (110, 100), method=method, chunk=5,
                           **kwargs)
    torch.testing.assert_close(part, full)
    desc = sample_descriptors(src, kps, (90, 90))
    torch.testing.assert_close(similarity(desc, trg, chunk=4), similarity(desc, trg))


def test_padded_batch_matches_each_pair_alone():
    torch.manual_seed(1)
    src, trg = torch.randn(2, 8, 6, 6), torch.randn(2, 8, 6, 6)
    kps = torch.rand(2, 5, 2) * 60
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    pred = match_keypoints(src, trg, kps, (60, 60), (60, 60), method='window_softargmax',
                           kps_mask=mask, window=2)
    assert torch.isnan(pred[1, 3:]).all() and not torch.isnan(pred[mask]).any()
    alone = match_keypoints(src[1:], trg[1:], kps[1:, :3], (60, 60), (60, 60),
                            method='window_softargmax', window=2)
    torch.testing.assert_close(pred[1, :3], alone[0])


def test_many_keypoints_in_one_call():
    # 1000 keypoints on a 60 x 60 grid: one batched call, no per-keypoint loop.
    torch.manual_seed(0)
    src, trg = torch.randn(1, 32, 60, 60), torch.randn(1, 32, 60, 60)
    kps = torch.rand(1, 1000, 2) * 839
    start = time.perf_counter()
    pred = match_keypoints(src, trg, kps, (840, 840), (840, 840), method='window_softargmax',
                           chunk=256)
    assert time.perf_counter() - start < 10
    assert pred.shape == (1, 1000, 2) and torch.isfinite(pred).all()
    assert (pred >= 6.5 - 1e-4).all() and (pred <= 839 - 6.5 + 1e-4).all()


def test_identity_match_recovers_source_keypoints_at_patch_centres():
    torch.manual_seed(0)
    feat = torch.randn(1, 64, 60, 60)
    cells = torch.randint(0, 60, (1, 50, 2))
    kps = grid_to_pixels(cells, (60, 60), (840, 840)).float()
    pred = match_keypoints(feat, feat, kps, (840, 840), (840, 840))
    torch.testing.assert_close(pred, kps)
    torch.testing.assert_close(pred, cells.float() * 14 + 7 - 0.5)


# ---------------------------------------------------------------- registry and errors
def test_matchers_build_from_dicts():
    torch.manual_seed(0)
    src, trg = torch.randn(1, 8, 5, 5), torch.randn(1, 8, 5, 5)
    kps = torch.rand(1, 4, 2) * 50
    for cfg, method, kwargs in [
            (dict(type='ArgmaxMatcher'), 'argmax', {}),
            (dict(type='SoftArgmaxMatcher', window=1, beta=0.02, mask='zero'),
             'window_softargmax', dict(window=1, beta=0.02, mask='zero')),
            (dict(type='KernelSoftArgmaxMatcher', sigma=1.5, chunk=2),
             'kernel_softargmax', dict(sigma=1.5))]:
        matcher = MODELS.build(cfg)
        assert type(matcher).__name__ in repr(matcher)
        torch.testing.assert_close(
            matcher(src, trg, kps, (50, 50), (50, 50)),
            match_keypoints(src, trg, kps, (50, 50), (50, 50), method=method, **kwargs))
    with pytest.raises(ValueError, match='mask'):
        MODELS.build(dict(type='SoftArgmaxMatcher', mask='ones'))


def test_input_errors():
    feat = torch.randn(1, 4, 3, 3)
    with pytest.raises(ValueError, match='method'):
        match_keypoints(feat, feat, torch.zeros(1, 2, 2), (3, 3), (3, 3), method='softmax')
    with pytest.raises(ValueError, match=r'\[B, K, 2\]'):
        match_keypoints(feat, feat, torch.zeros(2, 2), (3, 3), (3, 3))
    with pytest.raises(ValueError, match=r'\[B, C, h, w\]'):
        match_keypoints(feat[0], feat, torch.zeros(1, 2, 2), (3, 3), (3, 3))
    with pytest.raises(ValueError, match='kps_mask'):
        match_keypoints(feat, feat, torch.zeros(1, 2, 2), (3, 3), (3, 3),
                        kps_mask=torch.ones(1, 3, dtype=torch.bool))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_cuda_half_precision_matches_cpu():
    torch.manual_seed(0)
    src, trg = torch.randn(2, 16, 12, 12), torch.randn(2, 16, 12, 12)
    kps = torch.rand(2, 300, 2) * 167
    cpu = match_keypoints(src, trg, kps, (168, 168), (168, 168), method='argmax')
    gpu = match_keypoints(src.cuda().half(), trg.cuda().half(), kps.cuda(), (168, 168),
                          (168, 168), method='window_softargmax', window=0, chunk=64)
    assert gpu.device.type == 'cuda' and gpu.dtype == torch.float32
    agree = (gpu.cpu() - cpu).abs().max(-1).values < 1e-3
    assert agree.float().mean() > 0.95  # fp16 cosines may flip near-ties
    nn_idx, mutual = mutual_nn(src.cuda(), trg.cuda(), chunk=50)
    nn_cpu, mutual_cpu = mutual_nn(src, trg)
    assert torch.equal(nn_idx.cpu(), nn_cpu) and torch.equal(mutual.cpu(), mutual_cpu)
