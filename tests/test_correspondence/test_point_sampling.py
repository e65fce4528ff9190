"""correspondence.models.point_sampling: every method's cells and counts, determinism under a
seeded generator, the co-PCA foreground of a synthetic map with known square objects (and its
sign rule), padding/valid semantics and the errors for missing arguments."""
import pytest
import torch
from mmengine.registry import MODELS

from correspondence.models.point_sampling import PointSampler, co_pca_foreground


def _square_feats(b_squares, hw=(8, 8), c=6, seed=0):
    """Teacher features ``[B, C, h, w]`` with background vector + noise and an object vector
    inside ``square = (row0, row1, col0, col1)`` (inclusive) for each pair; returns the map and
    the flat cell indices of each square."""
    g = torch.Generator().manual_seed(seed)
    h, w = hw
    bg, fg = torch.randn(c, generator=g), torch.randn(c, generator=g) * 3
    feats = bg[None, :, None, None] + 0.01 * torch.randn(len(b_squares), c, h, w, generator=g)
    cells = []
    for i, (r0, r1, c0, c1) in enumerate(b_squares):
        feats[i, :, r0:r1 + 1, c0:c1 + 1] = fg[:, None, None] + 0.01 * torch.randn(
            c, r1 - r0 + 1, c1 - c0 + 1, generator=g)
        cells.append(torch.tensor([r * w + col for r in range(r0, r1 + 1)
                                   for col in range(c0, c1 + 1)]))
    return feats, cells


def test_full_every_cell_row_major():
    idx, valid = MODELS.build(dict(type='PointSampler'))((3, 4), 2)
    assert torch.equal(idx, torch.arange(12).expand(2, -1))
    assert idx.dtype == torch.long and valid.dtype == torch.bool and valid.all()


@pytest.mark.parametrize('hw, stride, rows, cols', [
    ((5, 6), 2, [0, 2, 4], [0, 2, 4]),
    ((7, 7), 4, [1, 5], [1, 5]),       # slack 2: one cell margin on each side
    ((8, 3), 3, [0, 3, 6], [1]),       # slack 1 goes to the bottom; 3 cols -> the middle one
    ((4, 4), 1, [0, 1, 2, 3], [0, 1, 2, 3]),
])
def test_grid_is_a_centred_sub_grid(hw, stride, rows, cols):
    idx, valid = PointSampler('grid', grid_stride=stride)(hw, 3)
    expected = torch.tensor([r * hw[1] + c for r in rows for c in cols])
    assert torch.equal(idx, expected.expand(3, -1)) and valid.all()


def test_random_counts_distinct_and_seeded():
    sampler = PointSampler('random', num_points=5)
    idx, valid = sampler((4, 6), 3, generator=torch.Generator().manual_seed(0))
    assert idx.shape == (3, 5) and valid.all()
    for row in idx:
        assert len(set(row.tolist())) == 5 and row.min() >= 0 and row.max() < 24
        assert torch.equal(row, row.sort().values)
    again, _ = sampler((4, 6), 3, generator=torch.Generator().manual_seed(0))
    other, _ = sampler((4, 6), 3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(idx, again) and not torch.equal(idx, other)
    assert not torch.equal(idx[0], idx[1])  # each pair draws its own cells
    everything, _ = PointSampler('random', num_points=24)((4, 6), 1)
    assert torch.equal(everything[0], torch.arange(24))


def test_foreground_is_exactly_the_square_and_pairs_are_padded():
    # Pair 0: a 3 x 3 source square; pair 1: a 2 x 2 one. Targets hold the object elsewhere.
    src, src_cells = _square_feats([(2, 4, 3, 5), (5, 6, 1, 2)], seed=1)
    trg, _ = _square_feats([(0, 2, 0, 2), (3, 5, 3, 6)], seed=1)
    idx, valid = PointSampler('foreground')((8, 8), 2, teacher_feats=(src, trg))
    assert idx.shape == (2, 9)
    assert torch.equal(idx[0], src_cells[0]) and valid[0].all()
    assert torch.equal(idx[1, :4], src_cells[1])
    assert torch.equal(valid[1], torch.tensor([True] * 4 + [False] * 5))
    assert torch.equal(idx[1, 4:], torch.zeros(5, dtype=torch.long))  # padding is index 0


def test_foreground_sign_rule_border_is_background():
    src, src_cells = _square_feats([(2, 4, 3, 5)], seed=2)
    trg, trg_cells = _square_feats([(1, 3, 1, 3)], seed=2)
    for sign in (1.0, -1.0):  # negated features flip the eigenvector; the rule flips it back
        comp_src, comp_trg = co_pca_foreground(sign * src[0], sign * trg[0])
        assert torch.equal(torch.nonzero(comp_src.flatten() > 0)[:, 0], src_cells[0])
        assert torch.equal(torch.nonzero(comp_trg.flatten() > 0)[:, 0], trg_cells[0])


def test_foreground_resizes_teacher_features_to_the_student_grid():
    # 16 x 16 teacher map whose square covers whole 2 x 2 blocks: bilinear halving is exact.
    src, _ = _square_feats([(4, 9, 6, 11)], hw=(16, 16), seed=3)
    trg, _ = _square_feats([(0, 5, 0, 5)], hw=(16, 16), seed=3)
    idx, valid = PointSampler('foreground')((8, 8), 1, teacher_feats=(src, trg))
    expected = torch.tensor([r * 8 + c for r in range(2, 5) for c in range(3, 6)])
    assert torch.equal(idx[0], expected) and valid.all()


def test_foreground_threshold_and_quantile():
    g = torch.Generator().manual_seed(4)
    src, trg = torch.randn(1, 5, 8, 8, generator=g), torch.randn(1, 5, 8, 8, generator=g)
    comp = co_pca_foreground(src[0], trg[0])[0].flatten()
    idx, valid = PointSampler('foreground', fg_quantile=0.75)((8, 8), 1, teacher_feats=(src, trg))
    # 0.75 quantile of 64 values lies between the 48th and 49th smallest: 16 cells above it.
    assert idx.shape == (1, 16) and valid.all()
    assert torch.equal(idx[0], comp.topk(16).indices.sort().values)
    thr = comp.sort().values[40].item()
    idx, valid = PointSampler('foreground', fg_threshold=thr)((8, 8), 1, teacher_feats=(src, trg))
    assert torch.equal(idx[0], comp.topk(23).indices.sort().values)


def test_random_foreground_subsets_padding_and_seed():
    src, src_cells = _square_feats([(2, 4, 3, 5), (5, 5, 1, 2)], seed=5)  # 9 and 2 fg cells
    trg, _ = _square_feats([(0, 2, 0, 2), (3, 5, 3, 6)], seed=5)
    sampler = PointSampler('random_foreground', num_points=4)
    idx, valid = sampler((8, 8), 2, teacher_feats=(src, trg),
                         generator=torch.Generator().manual_seed(0))
    assert idx.shape == (2, 4)
    assert valid[0].all() and len(set(idx[0].tolist())) == 4
    assert set(idx[0].tolist()) <= set(src_cells[0].tolist())
    assert torch.equal(idx[1, :2], src_cells[1])
    assert torch.equal(valid[1], torch.tensor([True, True, False, False]))
    again, _ = sampler((8, 8), 2, teacher_feats=(src, trg),
                       generator=torch.Generator().manual_seed(0))
    assert torch.equal(idx, again)
    draws = {tuple(sampler((8, 8), 2, teacher_feats=(src, trg),
                           generator=torch.Generator().manual_seed(s))[0][0].tolist())
             for s in range(6)}
    assert len(draws) > 1


def test_ground_truth_passes_cells_and_masks_padding():
    cells = torch.tensor([[3, 7, 99], [0, 11, 5]])
    gt_valid = torch.tensor([[True, True, False], [True, True, True]])
    idx, valid = PointSampler('ground_truth')((3, 4), 2, gt_cells=cells, gt_valid=gt_valid)
    assert torch.equal(idx, torch.tensor([[3, 7, 0], [0, 11, 5]]))
    assert torch.equal(valid, gt_valid)
    idx, valid = PointSampler('ground_truth')((3, 4), 2, gt_cells=cells[:, :2])
    assert torch.equal(idx, cells[:, :2]) and valid.all()


def test_errors():
    with pytest.raises(ValueError, match=r"method='fg' is not one of \('full', 'random', 'grid', "
                                         r"'foreground', 'random_foreground', 'ground_truth'\)"):
        PointSampler('fg')
    with pytest.raises(ValueError, match="method='random' needs num_points, a positive int"):
        PointSampler('random')
    with pytest.raises(ValueError, match="method='random_foreground' needs num_points"):
        PointSampler('random_foreground', num_points=0)
    with pytest.raises(ValueError, match='grid_stride=0 must be a positive int'):
        PointSampler('grid', grid_stride=0)
    with pytest.raises(ValueError, match=r'fg_quantile=1.5 must be in \[0, 1\)'):
        PointSampler('foreground', fg_quantile=1.5)
    with pytest.raises(ValueError, match="method='foreground' needs teacher_feats, which was "
                                         'not given'):
        PointSampler('foreground')((4, 4), 1)
    with pytest.raises(ValueError, match=r'needs teacher_feats as a tuple \(src \[B, C, h, w\], '
                                         r'trg \[B, C, h, w\]\).*got \(1, 3, 4, 4\)'):
        PointSampler('foreground')((4, 4), 1, teacher_feats=torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="method='ground_truth' needs gt_cells"):
        PointSampler('ground_truth')((4, 4), 1)
    with pytest.raises(ValueError, match=r'valid gt_cells must lie in 0..15 .* got min 0, max 16'):
        PointSampler('ground_truth')((4, 4), 1, gt_cells=torch.tensor([[0, 16]]))
    with pytest.raises(ValueError, match='num_points=20 is more than the 16 cells'):
        PointSampler('random', num_points=20)((4, 4), 1)
    assert repr(PointSampler('grid', grid_stride=3)).startswith("PointSampler(method='grid'")
