"""Matching descriptors between two feature maps: cosine nearest neighbour, mutual nearest
neighbour and soft-argmax refinements, batched over pairs and keypoints.

The one rule: out-of-window cells are masked with ``-inf`` before the softmax. The references
(SFNet's soft-argmax as used by GeoAware-SC and DistillDIFT) multiply the similarity by a 0/1
window instead, so every cell outside the window still gets weight ``exp(0 / beta)``; when the
peak similarity is low or the map is large this pulls the estimate towards the map's centre. Their
behaviour is kept, explicit and documented, as ``mask='zero'``.

Shapes: feature maps ``[B, C, h, w]``; keypoints ``[B, K, 2]`` as ``(x, y)`` pixels of a frame;
similarities ``[B, K, h * w]`` (row-major cells, index ``row * w + col``); grid coordinates
``[..., 2]`` as ``(col, row)``. Pixel/grid conversions are :mod:`correspondence.geometry`'s.
Everything runs on the features' device with no per-keypoint Python loop; ``chunk`` bounds memory
by processing keypoints (or source cells) ``chunk`` at a time.

Predictions are cell centres (or their soft-argmax mix) mapped by ``grid_to_pixels``: on a 60 x 60
ViT/14 grid over 840 px that is SD-DINO's ``idx * 14 + 7 - 0.5``; GeoAware-SC's soft-argmax
output ``x * 14 + 14 // 2`` sits half a pixel further right/down.
"""
import torch
import torch.nn.functional as F
from mmengine.registry import MODELS

from .geometry import grid_to_pixels, pixels_to_grid, pixels_to_normalized

MASKS = ('inf', 'zero')
KERNEL_TARGETS = ('logits', 'similarity')


def _check_feat(name, feat):
    if not torch.is_tensor(feat) or feat.dim() != 4:
        shape = tuple(feat.shape) if torch.is_tensor(feat) else type(feat).__name__
        raise ValueError(f'{name} must be a [B, C, h, w] feature map; got {shape}. Reshape '
                         'token sequences to their grid first.')


def _check_kps(name, kps, batch):
    if kps.dim() != 3 or kps.shape[-1] != 2 or kps.shape[0] != batch:
        raise ValueError(f'{name} must be [B, K, 2] (x, y) pixels with B={batch}; got '
                         f'{tuple(kps.shape)}. Pad pairs with fewer keypoints and pass kps_mask.')


def _chunks(n, chunk):
    step = max(n, 1) if not chunk else int(chunk)
    if step <= 0:
        raise ValueError(f'chunk must be a positive int or None; got {chunk!r}.')
    return [(s, min(s + step, n)) for s in range(0, max(n, 1), step)]


def _cell_coords(grid_hw, like):
    """``(col, row)`` of every cell, flattened row-major: two ``[h * w]`` tensors."""
    h, w = grid_hw
    idx = torch.arange(h * w, device=like.device)
    return (idx % w).to(like.dtype), torch.div(idx, w, rounding_mode='floor').to(like.dtype)


def _check_sim(sim, grid_hw):
    h, w = grid_hw
    if sim.shape[-1] != h * w:
        raise ValueError(f'similarity has {sim.shape[-1]} cells in its last dimension but '
                         f'grid_hw={tuple(grid_hw)} has {h * w}; pass the target grid (h, w).')
    # Soft-argmax arithmetic in at least float32, whatever the features' precision.
    return sim if sim.dtype in (torch.float32, torch.float64) else sim.float()


# ---------------------------------------------------------------- descriptors and similarity
def sample_descriptors(feat, kps, frame_wh, mode='bilinear'):
    """Descriptors of ``feat [B, C, h, w]`` at keypoints ``kps [B, K, 2]`` (pixels of the
    ``frame_wh = (W, H)`` frame the map covers) → ``[B, K, C]``.

    ``mode='bilinear'``: ``grid_sample`` (``align_corners=False``, border padding: a keypoint
    between the last cell centre and the frame edge reads the edge cells, not zeros); at a cell
    centre it returns that cell exactly. ``mode='nearest'``: the cell containing the keypoint.
    """
    _check_feat('feat', feat)
    kps = torch.as_tensor(kps, device=feat.device)
    _check_kps('kps', kps, feat.shape[0])
    b, c, h, w = feat.shape
    if mode == 'bilinear':
        grid = pixels_to_normalized(kps, frame_wh).to(feat.dtype)[:, :, None]  # [B, K, 1, 2]
        out = F.grid_sample(feat, grid, mode='bilinear', padding_mode='border',
                            align_corners=False)  # [B, C, K, 1]
        return out[..., 0].transpose(1, 2)
    if mode == 'nearest':
        g = pixels_to_grid(kps, (h, w), frame_wh)
        col = torch.floor(g[..., 0] + 0.5).long().clamp(0, w - 1)
        row = torch.floor(g[..., 1] + 0.5).long().clamp(0, h - 1)
        flat = feat.flatten(2)  # [B, C, h*w]
        index = (row * w + col)[:, None].expand(b, c, -1)
        return flat.gather(2, index).transpose(1, 2)
    raise ValueError(f"mode={mode!r}: expected 'bilinear' or 'nearest'.")


def _normalized_cells(feat):
    """``[B, C, h, w]`` → unit-norm ``[B, C, h * w]``."""
    return F.normalize(feat.flatten(2), dim=1)


def similarity(src_desc, trg_feat, chunk=None):
    """Cosine similarity of ``src_desc [B, K, C]`` with every cell of ``trg_feat [B, C, h, w]``
    → ``[B, K, h * w]`` (both sides L2-normalised; ``chunk`` keypoints per matrix product)."""
    _check_feat('trg_feat', trg_feat)
    trg = _normalized_cells(trg_feat)
    src = F.normalize(src_desc.to(trg.dtype), dim=-1)
    return torch.cat([torch.bmm(src[:, s:e], trg) for s, e in _chunks(src.shape[1], chunk)],
                     dim=1)


# ---------------------------------------------------------------- reductions: sim → (col, row)
def argmax_match(sim, grid_hw):
    """Best cell of ``sim [..., h * w]`` → integer grid ``(col, row)`` ``[..., 2]`` (long)."""
    _check_sim(sim, grid_hw)
    w = grid_hw[1]
    idx = sim.argmax(dim=-1)
    return torch.stack([idx % w, torch.div(idx, w, rounding_mode='floor')], dim=-1)


def _expectation(logits, cols, rows):
    prob = torch.softmax(logits, dim=-1)
    return torch.stack([(prob * cols).sum(-1), (prob * rows).sum(-1)], dim=-1)


def window_soft_argmax(sim, grid_hw, window=5, beta=0.02, mask='inf'):
    """Window soft-argmax (SFNet's, as GeoAware-SC's ``SOFT_EVAL``) → fractional ``(col, row)``.

    Weights ``softmax(sim / beta)`` over the ``(2 window + 1)^2`` cells within ``window`` cells
    (Chebyshev distance) of the argmax, clipped at the map's borders; the result is the expected
    ``(col, row)`` under those weights.

    ``mask='inf'`` (default): cells outside the window get logit ``-inf`` (weight 0).
    ``mask='zero'``: the references' version, faithful but biased: the similarity is multiplied by
    the 0/1 window and the softmax runs over *all* cells, so each outside cell keeps weight
    ``exp(0 / beta)``, pulling the estimate towards the map's centre.
    """
    sim = _check_sim(sim, grid_hw)
    if mask not in MASKS:
        raise ValueError(f'mask={mask!r} is not one of {MASKS}; use \'inf\' (exact) or \'zero\' '
                         '(the references\' multiplicative mask).')
    cols, rows = _cell_coords(grid_hw, sim)
    peak = argmax_match(sim, grid_hw).to(sim.dtype)
    inside = (((cols - peak[..., :1]).abs() <= window)
              & ((rows - peak[..., 1:]).abs() <= window))
    if mask == 'inf':
        logits = (sim / beta).masked_fill(~inside, float('-inf'))
    else:
        logits = sim * inside.to(sim.dtype) / beta
    return _expectation(logits, cols, rows)


def kernel_soft_argmax(sim, grid_hw, sigma=5.0, beta=0.02, apply_to='logits'):
    """Kernel soft-argmax (SFNet, Lee et al. CVPR'19; GeoAware-SC with a negative
    ``SOFT_EVAL_WINDOW``) → fractional ``(col, row)``.

    ``k = exp(-d^2 / (2 sigma^2))``, ``d`` the distance in cells to the argmax.

    ``apply_to='logits'`` (default): the kernel multiplies the softmax weights,
    ``p ∝ exp(sim / beta) * k``, i.e. ``softmax(sim / beta - d^2 / (2 sigma^2))``: a Gaussian
    prior around the argmax, no cell ever weighted by a similarity it does not have.
    ``apply_to='similarity'``: SFNet's released form, ``p = softmax(k * sim / beta)``; far cells
    get similarity ~0 (weight ``exp(0)``), the same centre bias as ``mask='zero'``.
    """
    sim = _check_sim(sim, grid_hw)
    if apply_to not in KERNEL_TARGETS:
        raise ValueError(f'apply_to={apply_to!r} is not one of {KERNEL_TARGETS}.')
    cols, rows = _cell_coords(grid_hw, sim)
    peak = argmax_match(sim, grid_hw).to(sim.dtype)
    d2 = (cols - peak[..., :1]) ** 2 + (rows - peak[..., 1:]) ** 2
    if apply_to == 'logits':
        logits = sim / beta - d2 / (2 * sigma ** 2)
    else:
        logits = torch.exp(-d2 / (2 * sigma ** 2)) * sim / beta
    return _expectation(logits, cols, rows)


REDUCERS = dict(
    argmax=argmax_match,
    window_softargmax=window_soft_argmax,
    kernel_softargmax=kernel_soft_argmax,
)


# ---------------------------------------------------------------- matching
def mutual_nn(src_feat, trg_feat, chunk=None):
    """Cosine nearest neighbours between all cells of two maps ``[B, C, hs, ws]`` and
    ``[B, C, ht, wt]``.

    Returns ``(nn, mutual)``: ``nn [B, hs * ws]`` the flat target index of each source cell's
    nearest neighbour, ``mutual [B, hs * ws]`` whether that target cell's nearest source cell is
    the source cell itself. ``chunk`` bounds the similarity block to ``chunk`` rows at a time.
    """
    _check_feat('src_feat', src_feat)
    _check_feat('trg_feat', trg_feat)
    src = _normalized_cells(src_feat)
    trg = _normalized_cells(trg_feat.to(src.dtype))

    def nearest(a, b):  # for each column of a [B, C, N], the column of b with largest cosine
        return torch.cat([torch.bmm(a[..., s:e].transpose(1, 2), b).argmax(-1)
                          for s, e in _chunks(a.shape[-1], chunk)], dim=1)

    s2t = nearest(src, trg)
    t2s = nearest(trg, src)
    mutual = t2s.gather(1, s2t) == torch.arange(s2t.shape[1], device=s2t.device)
    return s2t, mutual


def match_keypoints(src_feat, trg_feat, src_kps, src_frame_wh, trg_frame_wh, method='argmax',
                    kps_mask=None, chunk=None, sample='bilinear', **method_kwargs):
    """Predict the target keypoints of ``src_kps [B, K, 2]`` (pixels of the ``src_frame_wh``
    frame) → ``[B, K, 2]`` pixels of the ``trg_frame_wh`` frame.

    Each keypoint's descriptor is read from ``src_feat`` (``sample``: see
    :func:`sample_descriptors`), compared by cosine with every ``trg_feat`` cell, reduced to a
    grid position by ``method`` (a key of :data:`REDUCERS` or a callable
    ``f(sim, grid_hw, **method_kwargs)``) and mapped to pixels by
    :func:`~correspondence.geometry.grid_to_pixels`. ``kps_mask [B, K]`` (bool) marks real
    keypoints of pairs padded to a common ``K``; padded entries come back as NaN. ``chunk``
    keypoints are matched at a time, so memory is ``B * chunk * h * w`` similarities.
    """
    _check_feat('src_feat', src_feat)
    _check_feat('trg_feat', trg_feat)
    if src_feat.shape[0] != trg_feat.shape[0]:
        raise ValueError(f'src_feat and trg_feat hold {src_feat.shape[0]} and '
                         f'{trg_feat.shape[0]} pairs; they must hold the same pairs.')
    reduce = REDUCERS.get(method) if isinstance(method, str) else method
    if reduce is None:
        raise ValueError(f'method={method!r} is not one of {tuple(REDUCERS)} (or a callable).')
    src_kps = torch.as_tensor(src_kps, device=src_feat.device)
    _check_kps('src_kps', src_kps, src_feat.shape[0])
    grid_hw = tuple(trg_feat.shape[-2:])
    desc = sample_descriptors(src_feat, src_kps, src_frame_wh, mode=sample)
    trg = _normalized_cells(trg_feat)
    desc = F.normalize(desc.to(trg.dtype), dim=-1)
    coords = torch.cat([
        reduce(torch.bmm(desc[:, s:e], trg), grid_hw, **method_kwargs)
        for s, e in _chunks(desc.shape[1], chunk)], dim=1)
    dtype = src_kps.dtype if torch.is_floating_point(src_kps) else torch.float32
    pred = grid_to_pixels(coords.to(dtype), grid_hw, trg_frame_wh)
    if kps_mask is not None:
        kps_mask = torch.as_tensor(kps_mask, device=pred.device, dtype=torch.bool)
        if kps_mask.shape != pred.shape[:2]:
            raise ValueError(f'kps_mask must be [B, K] = {tuple(pred.shape[:2])}; got '
                             f'{tuple(kps_mask.shape)}.')
        pred = pred.masked_fill(~kps_mask[..., None], float('nan'))
    return pred


# ---------------------------------------------------------------- registered matchers
class _KeypointMatcher:
    """``matcher(src_feat, trg_feat, src_kps, src_frame_wh, trg_frame_wh, kps_mask=None)`` →
    target-frame keypoints; the options of :func:`match_keypoints` fixed at build time."""
    method = None

    def __init__(self, chunk=None, sample='bilinear', **method_kwargs):
        self.chunk = chunk
        self.sample = sample
        self.method_kwargs = method_kwargs

    def __call__(self, src_feat, trg_feat, src_kps, src_frame_wh, trg_frame_wh, kps_mask=None):
        return match_keypoints(src_feat, trg_feat, src_kps, src_frame_wh, trg_frame_wh,
                               method=self.method, kps_mask=kps_mask, chunk=self.chunk,
                               sample=self.sample, **self.method_kwargs)

    def __repr__(self):
        opts = dict(chunk=self.chunk, sample=self.sample, **self.method_kwargs)
        return f'{type(self).__name__}({", ".join(f"{k}={v!r}" for k, v in opts.items())})'


@MODELS.register_module()
class ArgmaxMatcher(_KeypointMatcher):
    """Hard cosine nearest neighbour (DIFT, SD-DINO): ``dict(type='ArgmaxMatcher')``."""
    method = 'argmax'


@MODELS.register_module()
class SoftArgmaxMatcher(_KeypointMatcher):
    """Window soft-argmax: ``dict(type='SoftArgmaxMatcher', window=5, beta=0.02, mask='inf')``
    (``mask='zero'`` reproduces GeoAware-SC/DistillDIFT; see :func:`window_soft_argmax`)."""
    method = 'window_softargmax'

    def __init__(self, window=5, beta=0.02, mask='inf', chunk=None, sample='bilinear'):
        if mask not in MASKS:
            raise ValueError(f'mask={mask!r} is not one of {MASKS}.')
        super().__init__(chunk=chunk, sample=sample, window=window, beta=beta, mask=mask)


@MODELS.register_module()
class KernelSoftArgmaxMatcher(_KeypointMatcher):
    """Kernel soft-argmax: ``dict(type='KernelSoftArgmaxMatcher', sigma=5, beta=0.02)``
    (see :func:`kernel_soft_argmax` for ``apply_to``)."""
    method = 'kernel_softargmax'

    def __init__(self, sigma=5.0, beta=0.02, apply_to='logits', chunk=None, sample='bilinear'):
        if apply_to not in KERNEL_TARGETS:
            raise ValueError(f'apply_to={apply_to!r} is not one of {KERNEL_TARGETS}.')
        super().__init__(chunk=chunk, sample=sample, sigma=sigma, beta=beta, apply_to=apply_to)
