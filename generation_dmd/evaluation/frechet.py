"""Fréchet distance (FID), Inception Score and the statistics files they read, in float64.

What the numbers are:

* FID: ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` of two Gaussians fitted to feature
  sets (Heusel et al. 2017), with ``scipy.linalg.sqrtm`` as EDM's ``fid.py``, pytorch-fid and
  torch-fidelity use it; ``S`` is the unbiased (``N - 1``) covariance.
* IS: ``exp(E_x KL(p(y|x) || p(y)))`` per split, mean and (population) std over the splits, as
  torch-fidelity's ``isc`` computes it from logits.

The one rule: statistics are accumulated in float64 as SUMS (:class:`FeatureStatistics`, and
:class:`InceptionScoreAccumulator` for IS), never as a list of features, so 50k images need
``O(D^2)`` memory, ranks merge by adding, and the result does not depend on the batch size.
The sums are taken around a fixed shift (the first batch's mean), so features with a large mean
lose no precision to ``sum(x x^T) - N mu mu^T`` cancellation.

Reference files (``.npz``) hold ``mu`` [D] and ``sigma`` [D, D]: the keys of EDM's
``fid-refs/*.npz``, pytorch-fid's and torch-fidelity's cached statistics alike. They are read
with ``allow_pickle=False``; ours add a ``metadata`` JSON string (count, extractor, source).
"""
import json
import os
import warnings
import zipfile

import numpy as np

from common.io import atomic_path


class FrechetError(ValueError):
    """Statistics that cannot be compared or read: wrong shapes, keys, a complex square root."""


def _as_float64(x, what):
    if hasattr(x, 'detach'):  # a torch tensor
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


# ----------------------------------------------------------------------------- statistics
class FeatureStatistics:
    """Running float64 mean and covariance of feature rows, mergeable across processes.

    ``update(features [N, D])`` adds rows; ``mean_cov()`` returns ``(mu [D], sigma [D, D])``
    with the unbiased covariance; ``merge(other)`` adds another accumulator's rows (another
    rank's); ``state()`` / ``from_state()`` pack it as plain arrays. Internally:
    ``count``, ``shift`` (the first batch's mean), ``sum = sum(x - shift)`` and
    ``outer = sum((x - shift)(x - shift)^T)``.
    """

    def __init__(self, dim=None):
        self.dim = None if dim is None else int(dim)
        self.count = 0
        self.shift = self.sum = self.outer = None
        if self.dim is not None:
            self._allocate(np.zeros(self.dim))

    def _allocate(self, shift):
        self.dim = len(shift)
        self.shift = np.asarray(shift, dtype=np.float64).copy()
        self.sum = np.zeros(self.dim)
        self.outer = np.zeros((self.dim, self.dim))

    def update(self, features):
        """Add the rows of ``features`` ([N, D] numpy or torch, any float dtype)."""
        x = _as_float64(features, 'features')
        if x.ndim != 2 or (self.dim is not None and x.shape[1] != self.dim):
            raise FrechetError(
                f'FeatureStatistics.update: features of shape {tuple(x.shape)}; expected '
                f'[N, {self.dim or "D"}] (one row per image). Flatten or pool the features to '
                f'one vector per image, and use one extractor for all of them.')
        if len(x) == 0:
            return self
        if self.count == 0:  # the first rows fix the shift
            self._allocate(x.mean(axis=0))
        centred = x - self.shift
        self.count += len(x)
        self.sum += centred.sum(axis=0)
        self.outer += centred.T @ centred
        return self

    def merge(self, other):
        """Add the rows ``other`` accumulated (re-expressed around this shift); returns self."""
        if other.count == 0:
            return self
        if self.count == 0 and self.dim in (None, other.dim):
            self._allocate(other.shift)
        if other.dim != self.dim:
            raise FrechetError(
                f'FeatureStatistics.merge: {self.dim}-d statistics and {other.dim}-d ones; '
                f'expected the same feature dimension (the same extractor on every rank).')
        d = other.shift - self.shift  # x - s1 = (x - s2) + d
        self.outer += (other.outer + np.outer(d, other.sum) + np.outer(other.sum, d)
                       + other.count * np.outer(d, d))
        self.sum += other.sum + other.count * d
        self.count += other.count
        return self

    def mean_cov(self):
        """``(mu [D], sigma [D, D])``, float64; the covariance is unbiased (divides by N - 1)."""
        if self.count < 2:
            raise FrechetError(
                f'FeatureStatistics: {self.count} feature row(s); a covariance needs at least '
                f'2 (the FID protocol uses 50000). Generate more images.')
        m = self.sum / self.count  # mean of (x - shift)
        cov = (self.outer - self.count * np.outer(m, m)) / (self.count - 1)
        return self.shift + m, (cov + cov.T) / 2

    def state(self):
        """A dict of plain arrays (``count``, ``shift``, ``sum``, ``outer``)."""
        return dict(count=self.count, shift=self.shift, sum=self.sum, outer=self.outer)

    @classmethod
    def from_state(cls, state):
        """The accumulator :meth:`state` described."""
        stats = cls()
        if int(state['count']) > 0:
            stats._allocate(state['shift'])
            stats.sum = np.array(state['sum'], dtype=np.float64)
            stats.outer = np.array(state['outer'], dtype=np.float64)
            stats.count = int(state['count'])
        return stats


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6, imag_tol=1e-3):
    """The Fréchet distance of N(mu1, sigma1) and N(mu2, sigma2) as a Python float (float64 maths).

    ``sqrtm(sigma1 @ sigma2)`` by ``scipy.linalg.sqrtm``; when it is not finite (a singular
    product, e.g. fewer images than feature dimensions), it is retried with ``eps`` added to
    both diagonals. Imaginary parts of the root (round-off) are dropped when the largest on its
    diagonal is below ``imag_tol``; larger ones raise :class:`FrechetError`.
    """
    import scipy.linalg

    mu1, mu2 = _as_float64(mu1, 'mu1'), _as_float64(mu2, 'mu2')
    sigma1, sigma2 = _as_float64(sigma1, 'sigma1'), _as_float64(sigma2, 'sigma2')
    d = mu1.shape[0] if mu1.ndim == 1 else None
    if (mu1.ndim != 1 or mu2.shape != mu1.shape or sigma1.shape != (d, d)
            or sigma2.shape != (d, d)):
        raise FrechetError(
            f'frechet_distance: mu1 {mu1.shape}, sigma1 {sigma1.shape}, mu2 {mu2.shape}, sigma2 '
            f'{sigma2.shape}; expected mu [D] and sigma [D, D] with one D for both sets. '
            f'Statistics of different extractors (e.g. 2048-d Inception pool vs a classifier\'s '
            f'features) cannot be compared: compute both with the same extractor.')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # sqrtm's "singular matrix" / deprecation chatter
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(d) * eps
            covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if not np.isfinite(covmean).all():
        raise FrechetError(
            'frechet_distance: the matrix square root of sigma1 @ sigma2 is not finite even '
            f'with {eps} added to the diagonals; the statistics hold NaN or Inf. Check the '
            'features (an extractor fed NaN images) and the reference file.')
    if np.iscomplexobj(covmean):
        imag = np.abs(np.diagonal(covmean).imag).max()
        if imag > imag_tol:
            raise FrechetError(
                f'frechet_distance: the square root of sigma1 @ sigma2 has imaginary parts up '
                f'to {imag:.3g} on its diagonal (tolerance {imag_tol}); the covariances are not '
                f'positive semi-definite, usually too few images for the feature dimension or '
                f'a corrupt statistics file. Use more images (FID: 50000).')
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


# ----------------------------------------------------------------------------- inception score
def _softmax64(logits):
    x = _as_float64(logits, 'logits')
    if x.ndim != 2 or x.shape[1] < 2:
        raise FrechetError(
            f'inception_score: logits of shape {tuple(x.shape)}; expected [N, K] class logits '
            f'with K >= 2 (Inception: 1008).')
    x = x - x.max(axis=1, keepdims=True)
    log_p = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    return np.exp(log_p), log_p


class InceptionScoreAccumulator:
    """Running sums for the Inception Score, split by a given split id per image.

    IS of one split = ``exp(mean_i sum_k p_ik log p_ik - sum_k pbar_k log pbar_k)`` with
    ``pbar = mean_i p_i``, so a split needs only ``sum_i p_i`` [K], ``sum_i sum_k p log p`` and
    its count: mergeable by adding. ``result()`` is ``(mean, std)`` over the non-empty splits,
    the std over splits with ``ddof=0`` as torch-fidelity.
    """

    def __init__(self, splits=10):
        if not isinstance(splits, int) or splits < 1:
            raise FrechetError(f'inception_score: splits={splits!r}; expected a positive int '
                               f'(10 in the usual protocol).')
        self.splits = splits
        self.num_classes = None
        self.counts = np.zeros(splits)
        self.entropy_sums = np.zeros(splits)  # sum_i sum_k p log p (minus the entropies)
        self.prob_sums = None

    def update(self, logits, split_ids):
        """Add images: ``logits`` [N, K], ``split_ids`` [N] ints in ``0..splits-1``."""
        p, log_p = _softmax64(logits)
        ids = np.asarray(split_ids, dtype=np.int64).reshape(-1)
        if len(ids) != len(p) or (len(ids) and (ids.min() < 0 or ids.max() >= self.splits)):
            raise FrechetError(f'inception_score: {len(ids)} split ids in '
                               f'[{ids.min() if len(ids) else "-"}, '
                               f'{ids.max() if len(ids) else "-"}] for {len(p)} images; '
                               f'expected one id in 0..{self.splits - 1} per image.')
        if self.prob_sums is None:
            self.num_classes = p.shape[1]
            self.prob_sums = np.zeros((self.splits, self.num_classes))
        elif p.shape[1] != self.num_classes:
            raise FrechetError(f'inception_score: {p.shape[1]} classes after '
                               f'{self.num_classes}; use one extractor for all images.')
        np.add.at(self.counts, ids, 1)
        np.add.at(self.entropy_sums, ids, (p * log_p).sum(axis=1))
        np.add.at(self.prob_sums, ids, p)
        return self

    def merge(self, other):
        """Add another accumulator's sums (another rank's); returns self."""
        if other.prob_sums is None:
            return self
        if self.prob_sums is None:
            self.num_classes = other.num_classes
            self.prob_sums = np.zeros_like(other.prob_sums)
        if other.prob_sums.shape != self.prob_sums.shape:
            raise FrechetError('inception_score: merging accumulators of different splits or '
                               'classes; use one configuration on every rank.')
        self.counts += other.counts
        self.entropy_sums += other.entropy_sums
        self.prob_sums += other.prob_sums
        return self

    @property
    def count(self):
        return int(self.counts.sum())

    def scores(self):
        """The IS of every non-empty split (float64 array)."""
        used = self.counts > 0
        if not used.any():
            raise FrechetError('inception_score: no images were added.')
        n = self.counts[used]
        pbar = self.prob_sums[used] / n[:, None]
        with np.errstate(divide='ignore', invalid='ignore'):
            cross = np.where(pbar > 0, pbar * np.log(pbar), 0.0).sum(axis=1)
        return np.exp(self.entropy_sums[used] / n - cross)

    def result(self):
        """``(mean, std)`` of the split scores, as Python floats."""
        s = self.scores()
        return float(s.mean()), float(s.std())

    def state(self):
        return dict(counts=self.counts, entropy_sums=self.entropy_sums,
                    prob_sums=self.prob_sums)


def inception_score(logits, splits=10):
    """``(mean, std)`` Inception Score of ``logits`` [N, K] over ``splits`` contiguous splits.

    Split ``i`` holds rows ``i*N//splits .. (i+1)*N//splits - 1`` (torch-fidelity's split with
    ``samples_shuffle=False``). Uniform predictions give 1; confident predictions spread evenly
    over K classes give K.
    """
    x = _as_float64(logits, 'logits')
    n = len(x)
    if n < splits:
        raise FrechetError(f'inception_score: {n} images for {splits} splits; expected at least '
                           f'one image per split. Use fewer splits or more images.')
    ids = (np.arange(n) * splits) // n  # row i is in split floor(i * splits / n)
    return InceptionScoreAccumulator(splits).update(x, ids).result()


# ----------------------------------------------------------------------------- files
STATS_KEYS = ('mu', 'sigma')


def save_reference_stats(path, mu, sigma, metadata=None):
    """Write ``mu`` [D] and ``sigma`` [D, D] (float64) and ``metadata`` (JSON) to an ``.npz``,
    atomically. The file is readable by EDM's ``fid.py``, pytorch-fid and torch-fidelity too."""
    mu, sigma = _as_float64(mu, 'mu'), _as_float64(sigma, 'sigma')
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise FrechetError(f'save_reference_stats: mu {mu.shape} and sigma {sigma.shape}; '
                           f'expected [D] and [D, D].')
    path = os.fspath(path)
    if not path.endswith('.npz'):
        raise FrechetError(f'save_reference_stats: {path!r} does not end in .npz; the '
                           f'statistics are an .npz file (mu, sigma). Name it e.g. '
                           f'cifar10-32x32.npz.')
    arrays = dict(mu=mu, sigma=sigma)
    if metadata is not None:
        arrays['metadata'] = np.array(json.dumps(metadata, sort_keys=True))
    with atomic_path(path) as tmp:
        with open(tmp, 'wb') as f:
            np.savez(f, **arrays)
    return path


def load_reference_stats(path, with_metadata=False):
    """``(mu, sigma)`` (float64) from a reference ``.npz`` (EDM's ``fid-refs``, pytorch-fid,
    torch-fidelity or :func:`save_reference_stats`), without pickle; ``with_metadata=True`` adds
    the metadata dict (empty for files of other tools) as a third value."""
    path = os.fspath(path)
    fix = ('Fetch EDM\'s reference statistics on a connected machine (https://nvlabs-fi-cdn.'
           'nvidia.com/edm/fid-refs/cifar10-32x32.npz) or compute them with '
           'tools/compute_fid_reference.py SOURCE OUT.npz, and pass that path.')
    if not os.path.isfile(path):
        raise FrechetError(f'Reference statistics {path!r} do not exist (relative paths are '
                           f'resolved from {os.getcwd()!r}). {fix}')
    try:
        data = np.load(path, allow_pickle=False)
        if not hasattr(data, 'files'):
            raise FrechetError(f'Reference statistics {path!r} hold a single array, not an '
                               f'.npz archive with mu and sigma. {fix}')
        with data:
            missing = [k for k in STATS_KEYS if k not in data.files]
            if missing:
                raise FrechetError(
                    f'Reference statistics {path!r} have the keys {sorted(data.files)}; expected '
                    f'mu [D] and sigma [D, D] (EDM, pytorch-fid and torch-fidelity all use these '
                    f'names), missing {missing}. {fix}')
            mu = np.asarray(data['mu'], dtype=np.float64)
            sigma = np.asarray(data['sigma'], dtype=np.float64)
            metadata = {}
            if 'metadata' in data.files:
                metadata = json.loads(str(data['metadata']))
    except FrechetError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise FrechetError(f'Reference statistics {path!r} cannot be read as an .npz of arrays '
                           f'({" ".join(str(err).split())}); the file is truncated, not an .npz, '
                           f'or holds pickled objects (never loaded). {fix}') from err
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise FrechetError(f'Reference statistics {path!r}: mu has shape {mu.shape} and sigma '
                           f'{sigma.shape}; expected [D] and [D, D] (Inception: 2048). {fix}')
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise FrechetError(f'Reference statistics {path!r} hold NaN or Inf values. {fix}')
    return (mu, sigma, metadata) if with_metadata else (mu, sigma)
