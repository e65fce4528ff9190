"""Normalised mean error (NME) of facial landmarks, as plain numpy functions."""
import numpy as np

# WFLW normalises by the distance of the outer eye corners (points 60 and 72).
WFLW_NORM_INDICES = (60, 72)


def _as_batch(points, name):
    points = np.asarray(points, dtype=np.float64)
    if points.ndim == 2:
        points = points[None]
    if points.ndim != 3 or points.shape[-1] != 2:
        raise ValueError(f'{name} must have shape (K, 2) or (N, K, 2), got {points.shape}')
    return points


def interocular_distance(gt, norm_indices=WFLW_NORM_INDICES):
    """Distance between the two normalising points of each face: shape ``(N,)``."""
    gt = _as_batch(gt, 'gt')
    a, b = norm_indices
    return np.linalg.norm(gt[:, a] - gt[:, b], axis=-1)


def nme_per_sample(pred, gt, norm_indices=WFLW_NORM_INDICES, visible=None):
    """NME of each face: mean point-to-point distance divided by the inter-ocular distance.

    Args:
        pred, gt: landmarks of shape ``(K, 2)`` or ``(N, K, 2)``.
        norm_indices: the two ground-truth points whose distance normalises the error.
        visible: optional ``(K,)`` or ``(N, K)`` mask; the mean runs over visible points only.

    Returns:
        ``(N,)`` array; a fraction of the normalising distance (multiply by 100 for the
        percentages of the WFLW tables).

    Raises:
        ValueError: shapes disagree, a face has no visible point, or its normalising distance
            is zero.
    """
    pred, gt = _as_batch(pred, 'pred'), _as_batch(gt, 'gt')
    if pred.shape != gt.shape:
        raise ValueError(f'pred {pred.shape} and gt {gt.shape} differ in shape')
    errors = np.linalg.norm(pred - gt, axis=-1)  # (N, K)
    if visible is None:
        visible = np.ones(errors.shape, dtype=bool)
    else:
        visible = np.broadcast_to(np.asarray(visible, dtype=bool).reshape(-1, errors.shape[1]),
                                  errors.shape)
    counts = visible.sum(axis=1)
    if (counts == 0).any():
        raise ValueError(f'face(s) {np.flatnonzero(counts == 0).tolist()} have no visible point')
    norm = interocular_distance(gt, norm_indices)
    if (norm <= 0).any():
        raise ValueError(f'face(s) {np.flatnonzero(norm <= 0).tolist()} have a zero distance '
                         f'between the normalising points {tuple(norm_indices)}')
    return (errors * visible).sum(axis=1) / counts / norm
