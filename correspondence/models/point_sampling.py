"""Which source cells a DistillDIFT-style training step compares: every cell, a random subset, a
regular sub-grid, the foreground of a co-PCA of the teacher features, or the ground-truth
keypoints.

The one rule: a sampler returns ``(idx, valid)``, both ``[B, N]``: ``idx`` holds flat indices
``row * w + col`` of SOURCE cells on the student grid ``(h, w)``, and pairs with fewer points
than the batch maximum are padded with ``idx = 0`` and ``valid = False``. Padded entries are
valid indices (so ``gather`` never fails) but must be masked: pass ``valid`` on to the loss
(:mod:`correspondence.models.losses`).

Foreground (``'foreground'``, ``'random_foreground'``): per pair, PCA is fitted jointly on the
source AND target teacher features (co-PCA, SD-DINO's and DistillDIFT's recipe; teacher maps on
another grid are first resized bilinearly to the student grid), and a cell is foreground when its
value on the first principal component is above ``fg_threshold`` (default 0), or above the
``fg_quantile`` quantile of the source image's values when that is given. A principal component
has no sign of its own; the rule here: the sign is chosen so that the cells on the border of the
two images (first/last row and column of both maps) are mostly negative (background) -- more
border cells negative than positive; on a tie, a negative border sum. This assumes the object
does not fill the images' borders, as in SPair-71k and most object-centric photos.
"""
import torch
import torch.nn.functional as F
from mmengine.registry import MODELS

from .extractors import pca_project

__all__ = ['PointSampler', 'co_pca_foreground']

METHODS = ('full', 'random', 'grid', 'foreground', 'random_foreground', 'ground_truth')


def _shape(x):
    return tuple(x.shape) if torch.is_tensor(x) else type(x).__name__


def _border_mask(h, w, device):
    mask = torch.zeros(h, w, dtype=torch.bool, device=device)
    mask[0], mask[-1], mask[:, 0], mask[:, -1] = True, True, True, True
    return mask


def co_pca_foreground(src_feat, trg_feat, grid_hw=None):
    """First principal component of a pair's co-PCA, sign fixed so the borders are background.

    Args:
        src_feat (Tensor): ``[C, h, w]`` source teacher features of one pair.
        trg_feat (Tensor): ``[C, h', w']`` target teacher features of the same pair.
        grid_hw (tuple | None): resize both maps bilinearly (``align_corners=False``) to this
            ``(h, w)`` first (None: they must share one grid).

    Returns:
        tuple[Tensor, Tensor]: the component on the source and on the target grid, ``[h, w]``
        each (float32 at least); positive values are foreground.
    """
    feats = []
    for feat in (src_feat, trg_feat):
        feat = feat.detach()[None]
        feat = feat if feat.dtype in (torch.float32, torch.float64) else feat.float()
        if grid_hw is not None and tuple(feat.shape[-2:]) != tuple(grid_hw):
            feat = F.interpolate(feat, size=tuple(grid_hw), mode='bilinear', align_corners=False)
        feats.append(feat)
    if feats[0].shape != feats[1].shape:
        raise ValueError(f'co_pca_foreground: source {tuple(feats[0].shape[1:])} and target '
                         f'{tuple(feats[1].shape[1:])} teacher features must be [C, h, w] maps '
                         'of the same shape; pass grid_hw to resize them to one grid.')
    comp = pca_project(torch.cat(feats), 1)[:, 0]  # [2, h, w]
    h, w = comp.shape[-2:]
    border = comp[:, _border_mask(h, w, comp.device)]
    positive, negative = int((border > 0).sum()), int((border < 0).sum())
    if positive > negative or (positive == negative and float(border.sum()) > 0):
        comp = -comp
    return comp[0], comp[1]


@MODELS.register_module()
class PointSampler:
    """Source points for similarity-map training: ``sampler(grid_hw, batch_size, ...)`` →
    ``(idx [B, N] long, valid [B, N] bool)`` (see the module docstring for the padding rule).

    Methods (DistillDIFT's ``sampling_method``):

    * ``'full'``: every cell, row-major (``N = h * w``; DistillDIFT's default).
    * ``'random'``: ``num_points`` distinct cells per pair, drawn from ``generator``, sorted.
    * ``'grid'``: every ``grid_stride``-th row and column; the sub-grid is centred (its first and
      last rows are as far from the map's top and bottom as possible given the stride, any odd
      cell of slack going to the bottom/right).
    * ``'foreground'``: every foreground cell of the source (co-PCA of ``teacher_feats``).
    * ``'random_foreground'``: ``num_points`` distinct foreground cells per pair (all of them,
      padded, when a pair has fewer), drawn from ``generator``, sorted.
    * ``'ground_truth'``: the ``gt_cells [B, K]`` given, with ``gt_valid [B, K]``.

    Args:
        method (str): one of the above.
        num_points (int | None): points per pair for ``'random'`` and ``'random_foreground'``.
        grid_stride (int): stride of ``'grid'``.
        fg_quantile (float | None): foreground = above this quantile (in ``[0, 1)``) of the
            source's first-component values; None: above ``fg_threshold``.
        fg_threshold (float): foreground = first-component value above this (default 0).
    """

    def __init__(self, method='full', num_points=None, grid_stride=2, fg_quantile=None,
                 fg_threshold=0.0):
        if method not in METHODS:
            raise ValueError(
                f"PointSampler: method={method!r} is not one of {METHODS}: 'full' (every cell), "
                f"'random' (num_points random cells), 'grid' (every grid_stride-th row and "
                f"column), 'foreground' (co-PCA foreground of the teacher features), "
                f"'random_foreground' (num_points random foreground cells) or 'ground_truth' "
                f'(the keypoint cells given). Fix the method in the sampler config.')
        if method in ('random', 'random_foreground'):
            if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 1:
                raise ValueError(f'PointSampler: method={method!r} needs num_points, a positive '
                                 f'int (the points drawn per pair); got num_points='
                                 f'{num_points!r}. Set it in the sampler config, or use '
                                 "method='full' to take every cell.")
        if isinstance(grid_stride, bool) or not isinstance(grid_stride, int) or grid_stride < 1:
            raise ValueError(f'PointSampler: grid_stride={grid_stride!r} must be a positive int '
                             '(1 takes every cell, 2 every other row and column).')
        if fg_quantile is not None and not 0 <= float(fg_quantile) < 1:
            raise ValueError(f'PointSampler: fg_quantile={fg_quantile!r} must be in [0, 1) (0.5: '
                             'the upper half of the source cells is foreground) or None (use '
                             'fg_threshold).')
        self.method = method
        self.num_points = num_points
        self.grid_stride = grid_stride
        self.fg_quantile = None if fg_quantile is None else float(fg_quantile)
        self.fg_threshold = float(fg_threshold)

    def __repr__(self):
        opts = dict(method=self.method, num_points=self.num_points, grid_stride=self.grid_stride,
                    fg_quantile=self.fg_quantile, fg_threshold=self.fg_threshold)
        return f'PointSampler({", ".join(f"{k}={v!r}" for k, v in opts.items())})'

    # ------------------------------------------------------------ helpers
    def _missing(self, what, fix):
        return ValueError(f'PointSampler: method={self.method!r} needs {what}, which was not '
                          f'given; {fix}')

    @staticmethod
    def _pad(rows, device):
        """List of 1-D long tensors → ``(idx, valid)`` padded to the longest."""
        n = max((len(r) for r in rows), default=0)
        idx = torch.zeros(len(rows), n, dtype=torch.long, device=device)
        valid = torch.zeros(len(rows), n, dtype=torch.bool, device=device)
        for i, r in enumerate(rows):
            idx[i, :len(r)] = r
            valid[i, :len(r)] = True
        return idx, valid

    @staticmethod
    def _draw(cells, k, generator):
        """``k`` distinct entries of ``cells`` (all of them when fewer), sorted."""
        if len(cells) <= k:
            return cells
        order = torch.randperm(len(cells), generator=generator,
                               device='cpu' if generator is None else generator.device)
        return cells[order[:k].to(cells.device)].sort().values

    def grid_cells(self, grid_hw, device=None):
        """Flat indices of the centred ``grid_stride`` sub-grid of ``grid_hw``, row-major."""
        h, w = grid_hw
        s = self.grid_stride
        rows = torch.arange((h - 1 - s * ((h - 1) // s)) // 2, h, s, device=device)
        cols = torch.arange((w - 1 - s * ((w - 1) // s)) // 2, w, s, device=device)
        return (rows[:, None] * w + cols[None, :]).flatten()

    def foreground_cells(self, grid_hw, teacher_feats):
        """Per pair, the flat indices of the source's foreground cells (list of 1-D tensors)."""
        if (not isinstance(teacher_feats, (tuple, list)) or len(teacher_feats) != 2
                or not all(torch.is_tensor(f) and f.dim() == 4 for f in teacher_feats)):
            got = (tuple(_shape(f) for f in teacher_feats)
                   if isinstance(teacher_feats, (tuple, list)) else _shape(teacher_feats))
            raise ValueError(f'PointSampler: method={self.method!r} needs teacher_feats as a '
                             f'tuple (src [B, C, h, w], trg [B, C, h, w]) of the pairs\' teacher '
                             f'features; got {got}.')
        src, trg = teacher_feats
        if src.shape[:2] != trg.shape[:2]:
            raise ValueError(f'PointSampler: teacher_feats src {tuple(src.shape)} and trg '
                             f'{tuple(trg.shape)} must share batch size and channels.')
        out = []
        for b in range(src.shape[0]):
            comp = co_pca_foreground(src[b], trg[b], grid_hw)[0].flatten()
            if self.fg_quantile is not None:
                thr = torch.quantile(comp, self.fg_quantile)
            else:
                thr = self.fg_threshold
            out.append(torch.nonzero(comp > thr)[:, 0])
        return out

    # ------------------------------------------------------------ call
    def __call__(self, grid_hw, batch_size, teacher_feats=None, gt_cells=None, gt_valid=None,
                 generator=None):
        if len(tuple(grid_hw)) != 2 or min(int(v) for v in grid_hw) < 1:
            raise ValueError(f'PointSampler: grid_hw={grid_hw!r} must be the student grid (h, w) '
                             'of positive ints.')
        h, w = (int(v) for v in grid_hw)
        b = int(batch_size)
        device = torch.device('cpu')
        for t in ((teacher_feats[0] if isinstance(teacher_feats, (tuple, list))
                   and teacher_feats else None), gt_cells):
            if torch.is_tensor(t):
                device = t.device
                break

        if self.method == 'full':
            idx = torch.arange(h * w, device=device).expand(b, -1).clone()
            return idx, torch.ones(b, h * w, dtype=torch.bool, device=device)
        if self.method == 'grid':
            idx = self.grid_cells((h, w), device).expand(b, -1).clone()
            return idx, torch.ones_like(idx, dtype=torch.bool)
        if self.method == 'random':
            if self.num_points > h * w:
                raise ValueError(f'PointSampler: num_points={self.num_points} is more than the '
                                 f'{h * w} cells of the {h}x{w} grid; lower num_points or use '
                                 "method='full'.")
            cells = torch.arange(h * w, device=device)
            return self._pad([self._draw(cells, self.num_points, generator) for _ in range(b)],
                             device)
        if self.method in ('foreground', 'random_foreground'):
            if teacher_feats is None:
                raise self._missing('teacher_feats', 'pass the pairs\' teacher features as a '
                                    'tuple (src [B, C, h, w], trg [B, C, h, w]).')
            rows = self.foreground_cells((h, w), teacher_feats)
            if len(rows) != b:
                raise ValueError(f'PointSampler: teacher_feats hold {len(rows)} pairs but '
                                 f'batch_size={b}.')
            if self.method == 'random_foreground':
                rows = [self._draw(r, self.num_points, generator) for r in rows]
            return self._pad(rows, device)
        # ground_truth
        if gt_cells is None:
            raise self._missing('gt_cells', 'pass the source keypoints\' flat cell indices '
                                '(row * w + col) as a long [B, K] tensor with gt_valid [B, K].')
        gt_cells = torch.as_tensor(gt_cells)
        if gt_cells.dim() != 2 or gt_cells.shape[0] != b or gt_cells.is_floating_point():
            raise ValueError(f'PointSampler: gt_cells must be a long [B, K] tensor of flat cell '
                             f'indices with B={b}; got {gt_cells.dtype} {tuple(gt_cells.shape)}.')
        if gt_valid is None:
            gt_valid = torch.ones(gt_cells.shape, dtype=torch.bool, device=gt_cells.device)
        gt_valid = torch.as_tensor(gt_valid, device=gt_cells.device)
        if gt_valid.shape != gt_cells.shape or gt_valid.dtype != torch.bool:
            raise ValueError(f'PointSampler: gt_valid must be a bool mask shaped like gt_cells '
                             f'{tuple(gt_cells.shape)}; got {gt_valid.dtype} '
                             f'{tuple(gt_valid.shape)}.')
        used = gt_cells[gt_valid]
        if used.numel() and (used.min() < 0 or used.max() >= h * w):
            raise ValueError(f'PointSampler: valid gt_cells must lie in 0..{h * w - 1} (the cells '
                             f'of the {h}x{w} grid); got min {int(used.min())}, max '
                             f'{int(used.max())}. Convert keypoints to the student grid first.')
        idx = torch.where(gt_valid, gt_cells.long(), torch.zeros_like(gt_cells, dtype=torch.long))
        return idx, gt_valid.clone()
