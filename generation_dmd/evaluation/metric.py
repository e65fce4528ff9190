"""``GenerationMetric``: FID and Inception Score of generated images in mmengine's test loop.

The standard protocol (EDM, used by DMD2's evaluation and NVIDIA's FastGen; facts, no code
copied):

* 50,000 generated images, quantised to uint8 as PNG files are (``(x * 127.5 + 128).clip(0,
  255)``), labels random per seed (EDM) or balanced (DMD2) for a conditional model;
* features: the 2048-d pool features of the TF-Inception network of 2015-12-05 (EDM's
  ``inception-2015-12-05.pkl``; here torch-fidelity's port of the same network), statistics
  accumulated in float64, FID through ``scipy.linalg.sqrtm``;
* reference: the statistics of the 50,000 CIFAR-10 TRAIN images (EDM's
  ``fid-refs/cifar10-32x32.npz``);
* EDM reports the MINIMUM over three seed sets (seeds 0-49999, 50000-99999, 100000-149999):
  run the test three times with ``first_seed`` 0, 50000, 100000 and take the smallest.
* IS (not in EDM's ``fid.py``): torch-fidelity's, 'logits_unbiased', 10 splits.

The one rule: a number is called ``FID`` / ``IS`` only when the run follows that protocol (the
standard Inception extractor, at least ``standard_num_images`` images, no ``proxy_note``, a
reference not marked as a proxy). Otherwise the keys are ``proxy_FD`` / ``proxy_IS`` /
``proxy_IS_std``, a ``not_comparable`` entry and a logged warning say why, so a proxy never
ends up in a table next to published FIDs.

Nothing but sums is kept: ``process`` extracts each batch's features at once (50k images are
never held), and ranks merge their float64 sums (``FeatureStatistics``) with tensors, not by
gathering images. IS splits are ``seed % is_splits``, so the score does not depend on the batch
size or the number of ranks. Images the distributed sampler repeats to pad the last round (at
most the last image of a rank, mmengine's ``DefaultSampler``) are dropped as mmengine's own
``collect_results`` drops them.
"""
import logging
import os
import os.path as osp

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from mmengine.registry import METRICS, MODELS

from common.io import atomic_path
from .frechet import (FeatureStatistics, FrechetError, InceptionScoreAccumulator,
                      frechet_distance, load_reference_stats)

METRIC_NAMES = ('FID', 'IS')
GRID_IMAGES = 64


class GenerationMetricError(ValueError):
    """A generation metric configured or fed wrongly."""


def build_feature_extractor(cfg):
    """A feature extractor from a MODELS config dict (the package's ``__init__`` registered
    ours), or the object itself (anything callable with ``name`` and ``standard``, e.g. a test's
    tiny network)."""
    if isinstance(cfg, dict) or (hasattr(cfg, 'keys') and hasattr(cfg, 'items')):
        return MODELS.build(dict(cfg))
    if callable(cfg) and hasattr(cfg, 'name') and hasattr(cfg, 'standard'):
        return cfg
    raise GenerationMetricError(
        f'GenerationMetric: feature_extractor={cfg!r}; expected a MODELS config dict '
        f"(dict(type='InceptionFeatureExtractor', weights_path=...) or "
        f"dict(type='ClassifierFeatureExtractor', ...)) or an extractor object with name and "
        f'standard attributes.')


def _grid_png(images, path, columns=8):
    """Tile uint8 ``[N, C, H, W]`` images into ``columns`` columns and write a PNG atomically."""
    from PIL import Image
    n, c, h, w = images.shape
    rows = -(-n // columns)
    grid = torch.zeros((c, rows * h, columns * w), dtype=torch.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, columns)
        grid[:, r * h:(r + 1) * h, col * w:(col + 1) * w] = img
    arr = grid[0].numpy() if c == 1 else grid.permute(1, 2, 0).numpy()
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(arr)).save(tmp, format='PNG')


@METRICS.register_module()
class GenerationMetric(BaseMetric):
    """FID and Inception Score (or their labelled proxies) of a generator's test outputs.

    Reads the model's ``test_step`` outputs: dicts ``{'image': uint8 [C, H, W], 'seed': int,
    'class_id': int}``.

    Args:
        feature_extractor (dict | object): MODELS config of an extractor
            (``InceptionFeatureExtractor(weights_path=...)`` for the protocol,
            ``ClassifierFeatureExtractor`` for a proxy) or an extractor object.
        reference_stats (str | None): ``.npz`` with ``mu`` / ``sigma`` (EDM's
            ``fid-refs/cifar10-32x32.npz``, or ``tools/compute_fid_reference.py``'s output).
        reference_images (str | array | None): instead of ``reference_stats``: a folder of
            images, an ``.npy`` / ``.npz`` uint8 array or an array, whose statistics are computed
            with the same extractor when the metric is first computed.
        metrics (tuple): ``'FID'`` and/or ``'IS'``.
        num_images (int | None): the number of images the test loop must deliver (a mismatch
            is an error); None: whatever it delivered (still logged and reported).
        standard_num_images (int): the protocol's count (50000).
        proxy_note (str | None): why the run is not the protocol although it looks like it
            (e.g. ``'test split reference'``); forces the proxy names.
        is_splits (int): Inception Score splits (10).
        prefix (str): key prefix (``generation/FID``).
        save_grid (str | None): a PNG path for the first 64 images (by seed).
        collect_device, collect_dir: accepted for BaseMetric compatibility; the sums are
            merged with ``mmengine.dist`` collectives on the communication device.
    """

    default_prefix = 'generation'

    def __init__(self, feature_extractor, reference_stats=None, reference_images=None,
                 metrics=METRIC_NAMES, num_images=None, standard_num_images=50000,
                 proxy_note=None, is_splits=10, prefix='generation', save_grid=None,
                 collect_device='cpu', collect_dir=None):
        super().__init__(collect_device=collect_device, prefix=prefix, collect_dir=collect_dir)
        metrics = (metrics, ) if isinstance(metrics, str) else tuple(metrics)
        unknown = [m for m in metrics if m not in METRIC_NAMES]
        if unknown or not metrics:
            raise GenerationMetricError(
                f'GenerationMetric: metrics={metrics!r}; expected a non-empty subset of '
                f'{METRIC_NAMES} (proxy runs are named proxy_FD / proxy_IS automatically). Fix '
                f'metrics in the evaluator config.')
        if 'FID' in metrics and (reference_stats is None) == (reference_images is None):
            raise GenerationMetricError(
                f'GenerationMetric: reference_stats={reference_stats!r} and reference_images='
                f'{"given" if reference_images is not None else None}; FID needs exactly one of '
                f'them: reference_stats=\'data/fid_refs/cifar10-32x32.npz\' (EDM\'s CIFAR-10 '
                f'train statistics, or tools/compute_fid_reference.py\'s output) or '
                f'reference_images=<folder or uint8 array>.')
        for name, value in (('num_images', num_images), ('standard_num_images',
                                                         standard_num_images)):
            if value is not None and (not isinstance(value, int) or value < 2):
                raise GenerationMetricError(f'GenerationMetric: {name}={value!r}; expected an '
                                            f'int >= 2 (the protocol: 50000).')
        self.metrics = metrics
        self.extractor = build_feature_extractor(feature_extractor)
        self.num_images = num_images
        self.standard_num_images = standard_num_images
        self.proxy_note = proxy_note
        self.is_splits = is_splits
        self.save_grid = save_grid
        self.reference_images = reference_images
        self.reference_stats = reference_stats
        self._reference = None  # (mu, sigma, metadata)
        if reference_stats is not None and 'FID' in metrics:
            self._reference = load_reference_stats(reference_stats, with_metadata=True)
            self._check_reference_metadata(self._reference[2], reference_stats)
        self.reset()

    # ------------------------------------------------------------------------- state
    def reset(self):
        """Forget everything processed (called after each evaluation)."""
        self._stats = FeatureStatistics()
        self._isc = InceptionScoreAccumulator(self.is_splits)
        self._pending = None  # (features [1, D], logits [1, K] | None, seed): maybe padding
        self._processed = 0
        self._grid, self._grid_seeds = [], []

    def _commit(self, features, logits, seeds):
        if len(features) == 0:
            return
        self._stats.update(features)
        if 'IS' in self.metrics:
            self._isc.update(logits, np.asarray(seeds, dtype=np.int64) % self.is_splits)

    def process(self, data_batch, data_samples):
        """Extract the features of one batch of generated images and add them to the sums."""
        if not data_samples:
            return
        try:
            images = torch.stack([torch.as_tensor(s['image']) for s in data_samples]).cpu()
            seeds = [int(s['seed']) for s in data_samples]
        except (KeyError, TypeError, RuntimeError) as err:
            raise GenerationMetricError(
                f'GenerationMetric.process: the model returned {type(data_samples[0]).__name__}s '
                f'({err}); expected dicts {{"image": uint8 [C, H, W], "seed": int, "class_id": '
                f'int}} of equal shape (the generator\'s test_step).') from err
        out = self.extractor(images)
        features = torch.as_tensor(out['features']).double().cpu().numpy()
        logits = out.get('logits')
        if 'IS' in self.metrics:
            if logits is None:
                raise GenerationMetricError(
                    f'GenerationMetric: metrics include IS, but the extractor '
                    f'{self.extractor.name!r} returns no logits. Remove IS from metrics or use '
                    f'an extractor with class logits.')
            logits = torch.as_tensor(logits).double().cpu().numpy()
        if self._pending is not None:  # the previous last image was not the rank's last
            features = np.concatenate([self._pending[0], features])
            logits = None if logits is None else np.concatenate([self._pending[1], logits])
            seeds = [self._pending[2]] + seeds
        self._commit(features[:-1], None if logits is None else logits[:-1], seeds[:-1])
        self._pending = (features[-1:], None if logits is None else logits[-1:], seeds[-1])
        self._processed += len(data_samples)
        if self.save_grid and len(self._grid) < GRID_IMAGES:
            keep = GRID_IMAGES - len(self._grid)
            self._grid += list(images[:keep])
            self._grid_seeds += [int(s['seed']) for s in data_samples[:keep]]

    def finalize_local(self, size, rank=0, world_size=1):
        """Add the held-back last image unless it is sampler padding.

        mmengine's ``DefaultSampler`` gives rank ``r`` the dataset positions ``r, r + W, r +
        2W, ...`` of a list padded (by repeating its start) to a multiple of W, so only a rank's
        last image can be padding: position ``r + (n - 1) W >= size``.
        """
        if self._pending is None:
            return
        position = rank + (self._processed - 1) * world_size
        if position < size:
            self._commit(*self._pending[:2], [self._pending[2]])
        self._pending = None

    def local_state(self):
        """This process's sums as numpy arrays (what the ranks merge)."""
        return dict(stats=self._stats.state(), isc=self._isc.state(),
                    grid=(self._grid, self._grid_seeds))

    @staticmethod
    def merge_states(states):
        """``(FeatureStatistics, InceptionScoreAccumulator, grid images, grid seeds)`` of the
        states of all ranks, merged by adding their sums."""
        stats, isc = FeatureStatistics(), None
        images, seeds = [], []
        for state in states:
            stats.merge(FeatureStatistics.from_state(state['stats']))
            part = InceptionScoreAccumulator(len(state['isc']['counts']))
            if state['isc']['prob_sums'] is not None:
                part.counts = np.array(state['isc']['counts'], dtype=np.float64)
                part.entropy_sums = np.array(state['isc']['entropy_sums'], dtype=np.float64)
                part.prob_sums = np.array(state['isc']['prob_sums'], dtype=np.float64)
                part.num_classes = part.prob_sums.shape[1]
            isc = part if isc is None else isc.merge(part)
            images += list(state['grid'][0])
            seeds += list(state['grid'][1])
        order = np.argsort(seeds, kind='stable')[:GRID_IMAGES]
        return stats, isc, [images[i] for i in order], [seeds[i] for i in order]

    def _gather_states(self):
        """Every rank's :meth:`local_state`, exchanged as tensors (``mmengine.dist``)."""
        from mmengine.dist import all_gather, all_reduce, get_world_size
        if get_world_size() == 1:
            return [self.local_state()]
        s, i = self._stats, self._isc
        grid = torch.stack(self._grid) if self._grid else None
        dims = torch.tensor([s.dim or 0, i.num_classes or 0,
                             *(grid.shape[1:] if grid is not None else (0, 0, 0))])
        all_reduce(dims, op='max')
        d, k, c, h, w = (int(v) for v in dims)

        def arr(x, shape):
            return torch.zeros(shape, dtype=torch.float64) if x is None else torch.as_tensor(
                np.asarray(x, dtype=np.float64))

        local = [torch.tensor([float(s.count)], dtype=torch.float64), arr(s.shift, (d, )),
                 arr(s.sum, (d, )), arr(s.outer, (d, d)),
                 arr(i.counts, (self.is_splits, )), arr(i.entropy_sums, (self.is_splits, )),
                 arr(i.prob_sums, (self.is_splits, k))]
        padded = torch.zeros((GRID_IMAGES, c, h, w), dtype=torch.uint8)
        grid_seeds = torch.full((GRID_IMAGES, ), -1, dtype=torch.int64)
        if grid is not None:
            padded[:len(grid)] = grid
            grid_seeds[:len(grid)] = torch.tensor(self._grid_seeds)
        gathered = [all_gather(t) for t in local + [padded, grid_seeds]]
        states = []
        for r in range(len(gathered[0])):
            count, shift, sum_, outer, counts, ent, probs, imgs, sds = (g[r].cpu() for g in
                                                                         gathered)
            keep = sds >= 0
            states.append(dict(
                stats=dict(count=int(count.item()), shift=shift.numpy(), sum=sum_.numpy(),
                           outer=outer.numpy()),
                isc=dict(counts=counts.numpy(), entropy_sums=ent.numpy(),
                         prob_sums=probs.numpy() if k else None),
                grid=(list(imgs[keep]), sds[keep].tolist())))
        return states

    def evaluate(self, size):
        """Merge the ranks' sums, compute the metrics on the main process, share the result."""
        from mmengine.dist import broadcast_object_list, get_dist_info, is_main_process
        rank, world_size = get_dist_info()
        self.finalize_local(size, rank, world_size)
        states = self._gather_states()
        if is_main_process():
            metrics = self.compute_metrics(states, size=size)
            if self.prefix:
                metrics = {f'{self.prefix}/{k}': v for k, v in metrics.items()}
            result = [metrics]
        else:
            result = [None]
        broadcast_object_list(result)
        self.reset()
        return result[0]

    # ------------------------------------------------------------------------- metrics
    def _check_reference_metadata(self, metadata, where):
        made_with = metadata.get('extractor')
        if made_with and made_with != self.extractor.name:
            raise GenerationMetricError(
                f'GenerationMetric: the reference statistics {where!r} were computed with the '
                f'extractor {made_with!r}, but this metric uses {self.extractor.name!r}; '
                f'Fréchet distances between features of different networks mean nothing. '
                f'Recompute the reference with tools/compute_fid_reference.py and the same '
                f'extractor.')

    def _reference_stats(self):
        if self._reference is None:
            from .sources import describe_source, reference_statistics
            stats = reference_statistics(self.reference_images, self.extractor)
            mu, sigma = stats.mean_cov()
            self._reference = (mu, sigma, dict(count=stats.count, extractor=self.extractor.name,
                                               source=describe_source(self.reference_images)))
        return self._reference

    def not_comparable_reasons(self, count, reference_metadata=None):
        """Why a run of ``count`` images is not the standard protocol ([] when it is)."""
        reasons = []
        if not getattr(self.extractor, 'standard', False):
            reasons.append(f'feature extractor {self.extractor.name!r} is not the protocol\'s '
                           f'Inception-v3')
        if count < self.standard_num_images:
            reasons.append(f'{count} images, not the protocol\'s {self.standard_num_images}')
        meta = reference_metadata or {}
        if 'FID' in self.metrics and meta.get('proxy_note'):
            reasons.append(f'reference: {meta["proxy_note"]}')
        if ('FID' in self.metrics and meta.get('count') is not None
                and int(meta['count']) < self.standard_num_images):
            reasons.append(f'reference statistics of {int(meta["count"])} images')
        if self.proxy_note:
            reasons.append(str(self.proxy_note))
        return reasons

    def compute_metrics(self, results, size=None):
        """The metrics of the merged ``results`` (a list of :meth:`local_state` dicts)."""
        stats, isc, grid, grid_seeds = self.merge_states(results)
        count = stats.count
        if self.num_images is not None and count != self.num_images:
            raise GenerationMetricError(
                f'GenerationMetric: the test loop delivered {count} images, but num_images='
                f'{self.num_images}; set the seeds dataset\'s num_images to {self.num_images} '
                f'(or num_images=None to accept any count, then it is a labelled proxy below '
                f'{self.standard_num_images}).')
        if size is not None and count != size:
            print_log(f'GenerationMetric: {count} images scored for a dataset of {size} seeds; '
                      f'the model returned a different number of outputs than it got seeds.',
                      logger='current', level=logging.WARNING)
        reference_meta = None
        metrics = {}
        if 'FID' in self.metrics:
            mu_ref, sigma_ref, reference_meta = self._reference_stats()
            mu, sigma = stats.mean_cov()
            if mu.shape != mu_ref.shape:
                raise FrechetError(
                    f'GenerationMetric: {len(mu)}-d features from {self.extractor.name!r} but '
                    f'{len(mu_ref)}-d reference statistics ({self.reference_stats or "images"});'
                    f' the reference was computed with another extractor. Recompute it with '
                    f'tools/compute_fid_reference.py and this extractor.')
            metrics['FD'] = frechet_distance(mu, sigma, mu_ref, sigma_ref)
        if 'IS' in self.metrics:
            metrics['IS'], metrics['IS_std'] = isc.result()
        reasons = self.not_comparable_reasons(count, reference_meta)
        if reasons:
            out = {f'proxy_{k}': v for k, v in metrics.items()}
            why = '; '.join(reasons)
            out['not_comparable'] = f'PROXY, not comparable with published FID/IS: {why}'
            print_log(f'GenerationMetric: {", ".join(f"proxy_{k} {v:.4f}" for k, v in metrics.items())}'
                      f' are PROXY numbers, NOT comparable with published FID / IS: {why}.',
                      logger='current', level=logging.WARNING)
        else:
            out = {('FID' if k == 'FD' else k): v for k, v in metrics.items()}
            print_log(f'GenerationMetric: {", ".join(f"{k} {v:.4f}" for k, v in out.items())} '
                      f'(standard protocol: {count} images, {self.extractor.name}; EDM reports '
                      f'the minimum over three seed sets).', logger='current')
        out['num_images'] = count
        out['feature_extractor'] = self.extractor.name
        if self.save_grid and grid:
            os.makedirs(osp.dirname(osp.abspath(self.save_grid)), exist_ok=True)
            _grid_png(torch.stack(grid), self.save_grid)
        return out
