"""Losses for training correspondence students on similarity maps: DistillDIFT's distillation of
a teacher's source-to-target similarity map (unsupervised / weakly supervised), Diffusion
Hyperfeatures' CLIP-style keypoint cross-entropy and DistillDIFT's supervised soft-argmax MSE.

The one rule: a similarity map is ``[B, N, M]``: row ``i`` holds source point ``i``'s similarity
with every target position ``j`` (``M = h * w`` cells, row-major, index ``row * w + col``), and
every softmax of these losses runs over the target positions (the last dimension), except where a
kind says otherwise. DistillDIFT's released loss runs its cross-entropy over the *source* points
(PyTorch's class dimension is dim 1) on maps that are already softmaxed; that defect is kept only
as the explicit ``kind='reference_ce'``, to reproduce their checkpoints, never as the default.

All losses are ``nn.Module``s registered in mmengine's root ``MODELS``, compute in float32 (or
float64 when given float64) whatever the inputs' precision, detach the teacher map (or target)
inside ``forward`` so gradients reach the student similarity only, return a scalar already
multiplied by ``loss_weight``, and accept ``-inf`` entries (cells masked out of a map) without
producing NaN. ``valid [B, N]`` masks padded source rows: they contribute nothing and the mean
runs over the valid rows; a batch with no valid row gives a zero loss.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.registry import MODELS

__all__ = ['cosine_similarity', 'SimilarityDistillLoss', 'KeypointCELoss', 'SoftArgmaxMSELoss']

DISTILL_KINDS = ('ce', 'kl', 'sce', 'infonce', 'mse', 'reference_ce')
KEYPOINT_LABELS = ('nearest', 'bilinear')


# ---------------------------------------------------------------- helpers
def _float(x):
    """At least float32 (float64 stays float64)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _shape(x):
    return tuple(x.shape) if torch.is_tensor(x) else type(x).__name__


def _check_map(who, name, sim):
    if not torch.is_tensor(sim) or sim.dim() != 3:
        raise ValueError(f'{who}: {name} must be a [B, N, M] similarity map (source points x '
                         f'target positions); got {_shape(sim)}. Flatten the target grid to '
                         'M = h * w cells (row-major) and batch the pairs.')


def _check_valid(who, valid, batch, points, device):
    """``valid`` as a bool ``[B, N]`` tensor (None: every row valid)."""
    if valid is None:
        return torch.ones(batch, points, dtype=torch.bool, device=device)
    valid = torch.as_tensor(valid, device=device)
    if valid.shape != (batch, points) or valid.dtype != torch.bool:
        raise ValueError(f'{who}: valid must be a bool [B, N] = [{batch}, {points}] mask of the '
                         f'source rows; got {valid.dtype} {_shape(valid)}. Pass the mask the '
                         'point sampler returned (True for real points, False for padding).')
    return valid


def _check_positive(who, name, value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        value = None
    if value is None or not value > 0:
        raise ValueError(f'{who}: {name} must be a positive number; got {value!r}. Typical '
                         'values: temperature 0.01 (DistillDIFT weakly supervised), 0.001 '
                         '(unsupervised), 0.07 (Hyperfeatures); beta 1000.')
    return value


def _masked_mean(values, mask):
    """Mean of ``values`` where ``mask`` (NaN/inf outside the mask are ignored); 0 if empty."""
    total = torch.where(mask, values, torch.zeros_like(values)).sum()
    return total / mask.sum().clamp(min=1).to(values.dtype)


def _soft_ce(target_prob, logits, dim=-1):
    """``-sum target_prob * log_softmax(logits)`` over ``dim``; cells with zero target
    probability contribute exactly 0 (so ``-inf`` logits there give no NaN)."""
    log_p = torch.log_softmax(logits, dim=dim)
    log_p = log_p.masked_fill(target_prob == 0, 0.0)
    return -(target_prob * log_p).sum(dim)


def _neg_entropy(prob, logits, dim=-1):
    """``sum prob * log prob`` with ``log prob = log_softmax(logits)``; 0 log 0 = 0."""
    log_p = torch.log_softmax(logits, dim=dim).masked_fill(prob == 0, 0.0)
    return (prob * log_p).sum(dim)


def cosine_similarity(src_desc, trg_desc):
    """Cosine similarity of every source descriptor with every target descriptor.

    Args:
        src_desc (Tensor): ``[B, N, C]`` source descriptors.
        trg_desc (Tensor): ``[B, M, C]`` target descriptors (e.g. a ``[B, C, h, w]`` map as
            ``feat.flatten(2).transpose(1, 2)``).

    Returns:
        Tensor: ``[B, N, M]`` dot products of the L2-normalised descriptors, in float32 (float64
        when an input is float64), whatever the inputs' precision.
    """
    for name, desc in (('src_desc', src_desc), ('trg_desc', trg_desc)):
        if not torch.is_tensor(desc) or desc.dim() != 3:
            raise ValueError(f'cosine_similarity: {name} must be [B, N, C] descriptors; got '
                             f'{_shape(desc)}. Turn a [B, C, h, w] map into descriptors with '
                             'feat.flatten(2).transpose(1, 2).')
    if src_desc.shape[0] != trg_desc.shape[0] or src_desc.shape[2] != trg_desc.shape[2]:
        raise ValueError(f'cosine_similarity: src_desc {tuple(src_desc.shape)} and trg_desc '
                         f'{tuple(trg_desc.shape)} must share the batch size B and the channels '
                         'C ([B, N, C] and [B, M, C]); resize or project one side first.')
    dtype = torch.promote_types(_float(src_desc).dtype, _float(trg_desc).dtype)
    src = F.normalize(src_desc.to(dtype), dim=-1)
    trg = F.normalize(trg_desc.to(dtype), dim=-1)
    return torch.bmm(src, trg.transpose(1, 2))


class _WeightedLoss(nn.Module):

    def __init__(self, loss_weight=1.0):
        super().__init__()
        self.loss_weight = float(loss_weight)


# ---------------------------------------------------------------- distillation of similarity maps
@MODELS.register_module()
class SimilarityDistillLoss(_WeightedLoss):
    """Distil a teacher's similarity map into the student's (DistillDIFT ``distill`` mode).

    ``loss(student_sim, teacher_sim, valid=None)`` with both maps ``[B, N, M]`` (source points x
    target positions, cosine similarities). With ``T = temperature``, ``T_t =
    teacher_temperature`` (default ``T``), ``p_T = softmax(teacher / T_t)`` and ``log p_S =
    log_softmax(student / T)`` over the target positions, per valid source row:

    * ``'ce'`` (default): ``-sum_j p_T(j) log p_S(j)``, from logits (no softmax applied twice).
    * ``'kl'``: ``KL(p_T || p_S) = ce - H(p_T)``; zero when the two maps agree.
    * ``'sce'``: symmetric: the mean of ``'ce'`` over target positions (averaged over the valid
      rows) and ``'ce'`` over source positions (the transposed maps, softmax over the valid
      source points of each pair, averaged over the target positions that have a finite entry).
    * ``'infonce'``: CLIP-style InfoNCE with a hard label: the teacher's argmax target position is
      the positive, ``cross_entropy(student / T, argmax_j teacher)``. One direction only (source
      to target): a target position has no single positive source point.
    * ``'mse'``: mean squared difference of the raw similarity maps (no temperature), over the
      valid rows' entries that are finite in both maps.
    * ``'reference_ce'``: DistillDIFT as released: ``nn.CrossEntropyLoss()(softmax(student / T,
      -1), softmax(teacher / T_t, -1))``. PyTorch takes dim 1 (the *source points*) as the class
      dimension and applies ``log_softmax`` again to an already softmaxed input, so this is a
      cross-entropy over the wrong dimension, on a softmax. It is wrong and kept only to
      reproduce their models; with ``valid``, padded rows are left out of the class dimension
      and the mean runs over the target positions of pairs with at least one valid row
      (target positions that are ``-inf`` in every valid teacher row are left out too).

    Args:
        kind (str): one of ``'ce'``, ``'kl'``, ``'sce'``, ``'infonce'``, ``'mse'``,
            ``'reference_ce'``.
        temperature (float): ``T`` of the student logits (DistillDIFT: 0.01 weakly supervised,
            0.001 unsupervised).
        teacher_temperature (float | None): ``T_t`` of the teacher distribution (None: ``T``).
        loss_weight (float): multiplies the loss.
    """

    def __init__(self, kind='ce', temperature=0.01, teacher_temperature=None, loss_weight=1.0):
        super().__init__(loss_weight)
        if kind not in DISTILL_KINDS:
            raise ValueError(
                f'SimilarityDistillLoss: kind={kind!r} is not one of {DISTILL_KINDS}: \'ce\' '
                "(cross-entropy over target positions from logits, the default), 'kl' (KL "
                "divergence, zero when the maps agree), 'sce' (symmetric cross-entropy), "
                "'infonce' (hard label at the teacher's argmax), 'mse' (squared difference of "
                "the maps) or 'reference_ce' (DistillDIFT's released, defective loss, only to "
                'reproduce their models). Fix the kind in the loss config.')
        self.kind = kind
        self.temperature = _check_positive('SimilarityDistillLoss', 'temperature', temperature)
        self.teacher_temperature = self.temperature if teacher_temperature is None else \
            _check_positive('SimilarityDistillLoss', 'teacher_temperature', teacher_temperature)

    def forward(self, student_sim, teacher_sim, valid=None):
        who = 'SimilarityDistillLoss'
        _check_map(who, 'student_sim', student_sim)
        _check_map(who, 'teacher_sim', teacher_sim)
        if student_sim.shape != teacher_sim.shape:
            raise ValueError(f'{who}: student_sim {tuple(student_sim.shape)} and teacher_sim '
                             f'{tuple(teacher_sim.shape)} must have the same [B, N, M] shape; '
                             'sample the same source points and bring the teacher features to '
                             "the student's grid before computing the similarities.")
        b, n, _ = student_sim.shape
        valid = _check_valid(who, valid, b, n, student_sim.device)
        dtype = torch.promote_types(_float(student_sim).dtype, _float(teacher_sim).dtype)
        rows = valid[..., None]
        # Padded rows are replaced by zeros so that nothing in them (e.g. all -inf) can be NaN.
        s = torch.where(rows, student_sim.to(dtype), torch.zeros((), dtype=dtype,
                                                                 device=student_sim.device))
        t = torch.where(rows, teacher_sim.detach().to(dtype),
                        torch.zeros((), dtype=dtype, device=student_sim.device))
        loss = getattr(self, f'_{self.kind}')(s, t, valid)
        return loss * self.loss_weight

    def _teacher_prob(self, t, dim=-1):
        return torch.softmax(t / self.teacher_temperature, dim=dim)

    def _ce(self, s, t, valid):
        return _masked_mean(_soft_ce(self._teacher_prob(t), s / self.temperature), valid)

    def _kl(self, s, t, valid):
        p_t = self._teacher_prob(t)
        row = _soft_ce(p_t, s / self.temperature) + _neg_entropy(p_t, t / self.teacher_temperature)
        return _masked_mean(row, valid)

    def _sce(self, s, t, valid):
        forward = self._ce(s, t, valid)
        # Backward: for each target position, a distribution over the pair's valid source points.
        cols_s = s.transpose(1, 2).masked_fill(~valid[:, None, :], float('-inf'))
        cols_t = t.transpose(1, 2).masked_fill(~valid[:, None, :], float('-inf'))
        usable = torch.isfinite(cols_s).any(-1) & torch.isfinite(cols_t).any(-1)  # [B, M]
        zero = torch.zeros((), dtype=s.dtype, device=s.device)
        cols_s = torch.where(usable[..., None], cols_s, zero)
        cols_t = torch.where(usable[..., None], cols_t, zero)
        backward = _masked_mean(
            _soft_ce(self._teacher_prob(cols_t), cols_s / self.temperature), usable)
        return 0.5 * (forward + backward)

    def _infonce(self, s, t, valid):
        label = t.argmax(dim=-1)  # [B, N]
        log_p = torch.log_softmax(s / self.temperature, dim=-1)
        row = -log_p.gather(-1, label[..., None])[..., 0]
        return _masked_mean(row, valid)

    def _mse(self, s, t, valid):
        entries = valid[..., None] & torch.isfinite(s) & torch.isfinite(t)
        # Zero the excluded entries first: (-inf) - (-inf) would put NaN into the gradient.
        s, t = s.masked_fill(~entries, 0.0), t.masked_fill(~entries, 0.0)
        return _masked_mean((s - t) ** 2, entries)

    def _reference_ce(self, s, t, valid):
        pred = torch.softmax(s / self.temperature, dim=-1)
        target = self._teacher_prob(t)
        # nn.CrossEntropyLoss on [B, N, M]: classes along dim 1 (source points), mean over B, M.
        has_rows = valid.any(dim=1)  # [B]
        padded = (~valid & has_rows[:, None])[..., None]
        logits = pred.masked_fill(padded, float('-inf'))
        target = target.masked_fill(padded, 0.0)
        per_position = _soft_ce(target, logits, dim=1)  # [B, M]
        # Target positions masked (-inf) in every valid teacher row are absent, not averaged in.
        present = (torch.isfinite(t) & valid[..., None]).any(dim=1)
        return _masked_mean(per_position, present & has_rows[:, None])

    def extra_repr(self):
        extra = f'kind={self.kind!r}, temperature={self.temperature}'
        if self.teacher_temperature != self.temperature:
            extra += f', teacher_temperature={self.teacher_temperature}'
        return extra + f', loss_weight={self.loss_weight}'


# ---------------------------------------------------------------- supervised keypoint losses
def _check_keypoint_map(who, name, sim, cells_name, cells, label, grid_hw):
    _check_map(who, name, sim)
    b, n, m = sim.shape
    if label == 'nearest':
        if not torch.is_tensor(cells) or cells.shape != (b, n) or cells.is_floating_point():
            raise ValueError(f'{who}: {cells_name} must be a long [B, N] = [{b}, {n}] tensor of '
                             f'flat cell indices (row * w + col) matching {name}; got '
                             f'{_shape(cells)}. Round keypoints to their cells first, or use '
                             "label='bilinear' with float (col, row) positions.")
        cells = cells.long()
        if cells.numel() and (cells.min() < 0 or cells.max() >= m):
            raise ValueError(f'{who}: {cells_name} holds indices outside 0..{m - 1} (the {m} '
                             f'cells of {name}); got min {int(cells.min())}, max '
                             f'{int(cells.max())}. Clamp padded entries to 0 and mark them '
                             'invalid.')
        return cells
    if not torch.is_tensor(cells) or cells.shape != (b, n, 2) or not cells.is_floating_point():
        raise ValueError(f"{who}: with label='bilinear', {cells_name} must be a float [B, N, 2] "
                         f'= [{b}, {n}, 2] tensor of (col, row) grid positions (cell centres at '
                         f'integers); got {_shape(cells)}.')
    if grid_hw is None or int(grid_hw[0]) * int(grid_hw[1]) != m:
        raise ValueError(f"{who}: label='bilinear' needs grid_hw=(h, w) with h * w = {m} (the "
                         f'cells of {name}); got grid_hw={grid_hw!r}.')
    return cells


def bilinear_cell_labels(pos, grid_hw, dtype=torch.float32):
    """Soft labels ``[B, N, h * w]`` spreading each ``(col, row)`` position of ``pos [B, N, 2]``
    over the (up to) 4 cells around it with bilinear weights (clamped to the grid); a position at
    a cell centre puts all its mass on that cell."""
    h, w = int(grid_hw[0]), int(grid_hw[1])
    col = pos[..., 0].to(dtype).clamp(0, w - 1)
    row = pos[..., 1].to(dtype).clamp(0, h - 1)
    c0, r0 = col.floor(), row.floor()
    fc, fr = col - c0, row - r0
    c0, r0 = c0.long(), r0.long()
    c1, r1 = (c0 + 1).clamp(max=w - 1), (r0 + 1).clamp(max=h - 1)
    labels = torch.zeros(*pos.shape[:-1], h * w, dtype=dtype, device=pos.device)
    for rr, cc, weight in ((r0, c0, (1 - fr) * (1 - fc)), (r0, c1, (1 - fr) * fc),
                           (r1, c0, fr * (1 - fc)), (r1, c1, fr * fc)):
        labels.scatter_add_(-1, (rr * w + cc)[..., None], weight[..., None])
    return labels


@MODELS.register_module()
class KeypointCELoss(_WeightedLoss):
    """Supervised CLIP-style keypoint cross-entropy (Diffusion Hyperfeatures' training loss).

    ``loss(src_to_trg, trg_cells, valid, trg_to_src=None, src_cells=None, grid_hw=None)``:
    ``src_to_trg [B, N, h * w]`` holds the cosine similarities of the N source keypoints'
    descriptors with every target cell; the label of row ``i`` is the cell of target keypoint
    ``i``. Logits are ``sim / temperature`` (Hyperfeatures: a fixed 0.07) and the loss is the
    cross-entropy over the cells, averaged over valid keypoints. ``symmetric=True`` averages it
    with the same loss in the other direction (target keypoints against every source cell,
    ``trg_to_src`` labelled by ``src_cells``), as Hyperfeatures does.

    Args:
        temperature (float): logits are similarities divided by this.
        symmetric (bool): average both directions (then ``trg_to_src`` and ``src_cells`` are
            required).
        label (str): ``'nearest'``: cells are long flat indices ``row * w + col``;
            ``'bilinear'``: cells are float ``(col, row)`` positions ``[B, N, 2]`` (cell centres
            at integers) and the label is spread over the 4 cells around each with bilinear
            weights (needs ``grid_hw``).
        loss_weight (float): multiplies the loss.
    """

    def __init__(self, temperature=0.07, symmetric=True, label='nearest', loss_weight=1.0):
        super().__init__(loss_weight)
        self.temperature = _check_positive('KeypointCELoss', 'temperature', temperature)
        if label not in KEYPOINT_LABELS:
            raise ValueError(f"KeypointCELoss: label={label!r} is not one of {KEYPOINT_LABELS}: "
                             "'nearest' takes the cell index of each keypoint, 'bilinear' "
                             'spreads a sub-cell (col, row) position over its 4 cells.')
        self.symmetric = bool(symmetric)
        self.label = label

    def _direction(self, sim, name, cells, cells_name, valid, grid_hw):
        who = 'KeypointCELoss'
        cells = _check_keypoint_map(who, name, sim, cells_name, cells, self.label, grid_hw)
        valid = _check_valid(who, valid, sim.shape[0], sim.shape[1], sim.device)
        logits = _float(sim) / self.temperature
        logits = torch.where(valid[..., None], logits, torch.zeros_like(logits))
        if self.label == 'nearest':
            cells = torch.where(valid, cells.to(sim.device), torch.zeros_like(cells))
            row = -torch.log_softmax(logits, -1).gather(-1, cells[..., None])[..., 0]
        else:
            target = bilinear_cell_labels(cells.detach().to(sim.device), grid_hw, logits.dtype)
            row = _soft_ce(target, logits)
        return _masked_mean(row, valid)

    def forward(self, src_to_trg, trg_cells, valid=None, trg_to_src=None, src_cells=None,
                grid_hw=None):
        loss = self._direction(src_to_trg, 'src_to_trg', trg_cells, 'trg_cells', valid, grid_hw)
        if self.symmetric:
            if trg_to_src is None or src_cells is None:
                raise ValueError('KeypointCELoss: symmetric=True needs trg_to_src (the target '
                                 "keypoints' similarities with every source cell, [B, N, h*w]) "
                                 'and src_cells (the source keypoints\' cells); pass both, or '
                                 'build the loss with symmetric=False.')
            back = self._direction(trg_to_src, 'trg_to_src', src_cells, 'src_cells', valid,
                                   grid_hw)
            loss = 0.5 * (loss + back)
        return loss * self.loss_weight

    def extra_repr(self):
        return (f'temperature={self.temperature}, symmetric={self.symmetric}, '
                f'label={self.label!r}, loss_weight={self.loss_weight}')


@MODELS.register_module()
class SoftArgmaxMSELoss(_WeightedLoss):
    """Supervised soft-argmax regression (DistillDIFT ``distilled_s``): ``softmax(beta * sim)``
    over the target cells gives an expected ``(col, row)``; the loss is its mean squared error to
    the ground-truth position, averaged over the valid keypoints and both coordinates (as
    ``F.mse_loss`` on ``[K, 2]`` points), in grid-cell units.

    In training mode (``module.training``) the target gets Gaussian jitter of standard deviation
    ``jitter`` cells (DistillDIFT: 1 cell), drawn from ``generator`` when one is given; in eval
    mode the target is used as is.

    Args:
        beta (float): softmax inverse temperature on the similarities (DistillDIFT: 1000).
        jitter (float): standard deviation of the training-time target jitter, in cells (0: off).
        loss_weight (float): multiplies the loss.
    """

    def __init__(self, beta=1000.0, jitter=1.0, loss_weight=1.0):
        super().__init__(loss_weight)
        self.beta = _check_positive('SoftArgmaxMSELoss', 'beta', beta)
        self.jitter = float(jitter)
        if not self.jitter >= 0:
            raise ValueError(f'SoftArgmaxMSELoss: jitter={jitter!r} must be >= 0 (the standard '
                             'deviation of the target jitter in grid cells; 0 turns it off).')

    def expected_position(self, sim, grid_hw):
        """``softmax(beta * sim)`` over the cells of ``sim [B, N, h * w]`` → expected
        ``(col, row)`` ``[B, N, 2]`` (float32 at least)."""
        h, w = int(grid_hw[0]), int(grid_hw[1])
        prob = torch.softmax(_float(sim) * self.beta, dim=-1)
        idx = torch.arange(h * w, device=sim.device)
        cols = (idx % w).to(prob.dtype)
        rows = torch.div(idx, w, rounding_mode='floor').to(prob.dtype)
        return torch.stack([(prob * cols).sum(-1), (prob * rows).sum(-1)], dim=-1)

    def forward(self, sim, grid_hw, target, valid=None, generator=None):
        who = 'SoftArgmaxMSELoss'
        _check_map(who, 'sim', sim)
        b, n, m = sim.shape
        if len(tuple(grid_hw)) != 2 or int(grid_hw[0]) * int(grid_hw[1]) != m:
            raise ValueError(f'{who}: grid_hw={tuple(grid_hw)!r} must be the target grid (h, w) '
                             f'with h * w = {m}, the cells in the last dimension of sim.')
        if not torch.is_tensor(target) or target.shape != (b, n, 2):
            raise ValueError(f'{who}: target must be a float [B, N, 2] = [{b}, {n}, 2] tensor of '
                             f'(col, row) grid positions (cell centres at integers); got '
                             f'{_shape(target)}. Convert pixels with correspondence.geometry.'
                             'pixels_to_grid.')
        valid = _check_valid(who, valid, b, n, sim.device)
        sim = torch.where(valid[..., None], _float(sim), torch.zeros((), device=sim.device))
        pred = self.expected_position(sim, grid_hw)
        target = target.detach().to(device=sim.device, dtype=pred.dtype)
        if self.training and self.jitter > 0:
            noise = torch.randn(target.shape, generator=generator, dtype=pred.dtype,
                                device=target.device if generator is None else generator.device)
            target = target + self.jitter * noise.to(target.device)
        sq = ((pred - target) ** 2).mean(-1)
        return _masked_mean(sq, valid) * self.loss_weight

    def extra_repr(self):
        return f'beta={self.beta}, jitter={self.jitter}, loss_weight={self.loss_weight}'
