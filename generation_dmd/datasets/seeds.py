"""The evaluation "dataset" of a generator: one item per image to generate, ``{seed, class_id}``.

A generator's test loop needs no images, only which noise and which label each generated image
gets. :class:`GenerationSeedsDataset` lists them; the model's ``test_step`` turns a batch into
images (``pairs.pair_latents(seeds)`` noise) and ``GenerationMetric`` scores them.

The one rule: an item is defined by its SEED alone. The label of seed ``s`` does not depend on
``num_images``, ``first_seed``, the batch size or the number of ranks ('random': a generator
seeded with ``(label_seed, s)``; 'balanced': ``(s - first_seed) % num_classes``), so the image of
seed 123 is the same image in a 10-image smoke test and in a 50k FID run.

Label policies, and how they relate to the reference code (facts, no code copied):

* ``'random'`` (default): one label per seed, uniform over the classes, drawn from
  ``numpy.random.default_rng([label_seed, seed])``. EDM's ``generate.py`` also draws the label
  per seed (a ``randint`` from the seed's own torch generator after the latent); the numbers
  differ from EDM's, the property (label fixed by the seed) is the same.
* ``'balanced'``: ``index % num_classes`` with ``index = seed - first_seed``: exactly
  ``num_images / num_classes`` images per class when it divides (DMD2's EDM evaluation script,
  ``arange(N) % label_dim``).
"""
import numpy as np
import torch
from mmengine.registry import DATASETS

LABEL_POLICIES = ('random', 'balanced')
MAX_SEED = 2 ** 63 - 1


class GenerationSeedsError(ValueError):
    """A seeds dataset asked for with impossible settings."""


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def seed_labels(seeds, num_classes, labels='random', label_seed=0, first_seed=None):
    """The class ids (int64 array) of ``seeds`` under a label policy (see the module docstring).

    ``first_seed`` (default ``min(seeds)``) is the origin of the 'balanced' count.
    """
    seeds = np.asarray(seeds, dtype=np.int64)
    if labels == 'balanced':
        if first_seed is None:
            first_seed = int(seeds.min()) if len(seeds) else 0
        return (seeds - first_seed) % num_classes
    return np.array([np.random.default_rng([int(label_seed), int(s)]).integers(num_classes)
                     for s in seeds], dtype=np.int64)


@DATASETS.register_module()
class GenerationSeedsDataset(torch.utils.data.Dataset):
    """``num_images`` items ``{'seed': int, 'class_id': int}`` for a generator's test loop.

    Args:
        num_images (int): how many images to generate (50000 for the standard FID protocol).
        first_seed (int): seeds are ``first_seed, ..., first_seed + num_images - 1`` (EDM's three
            FID seed sets: 0, 50000, 100000).
        num_classes (int | None): None for an unconditional generator (every ``class_id`` is
            -1); else labels in ``0..num_classes-1`` by the ``labels`` policy.
        labels ('random' | 'balanced'): see the module docstring.
        label_seed (int): seeds the 'random' labels.

    With mmengine's default ``pseudo_collate`` a batch is ``{'seed': [int, ...], 'class_id':
    [int, ...]}``; with ``collate_fn=dict(type='default_collate')`` two int64 tensors ``[B]``.
    ``metainfo`` tells the test loop's evaluator the seed range and label policy.
    """

    def __init__(self, num_images, first_seed=0, num_classes=None, labels='random', label_seed=0):
        if not _is_int(num_images) or num_images <= 0:
            raise GenerationSeedsError(
                f'GenerationSeedsDataset: num_images={num_images!r}; expected a positive integer '
                f'(50000 for the standard FID protocol). Set num_images in the dataset config.')
        if not _is_int(first_seed) or first_seed < 0 or first_seed + num_images - 1 > MAX_SEED:
            raise GenerationSeedsError(
                f'GenerationSeedsDataset: first_seed={first_seed!r}; expected an integer >= 0 '
                f'with first_seed + num_images - 1 <= 2**63 - 1 (torch.Generator seeds). Use 0, '
                f'50000 or 100000 for EDM\'s three seed sets.')
        if num_classes is not None and (not _is_int(num_classes) or num_classes < 1):
            raise GenerationSeedsError(
                f'GenerationSeedsDataset: num_classes={num_classes!r}; expected None (an '
                f'unconditional generator) or a positive integer (10 for CIFAR-10).')
        if labels not in LABEL_POLICIES:
            raise GenerationSeedsError(
                f'GenerationSeedsDataset: labels={labels!r} is not a label policy; expected '
                f"'random' (one uniform label per seed, as EDM's generate.py) or 'balanced' "
                f"(index % num_classes, as DMD2's evaluation). Fix labels in the dataset config.")
        if not _is_int(label_seed) or label_seed < 0:
            raise GenerationSeedsError(
                f'GenerationSeedsDataset: label_seed={label_seed!r}; expected an integer >= 0.')
        self.num_images = int(num_images)
        self.first_seed = int(first_seed)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.labels = labels
        self.label_seed = int(label_seed)
        seeds = np.arange(self.first_seed, self.first_seed + self.num_images, dtype=np.int64)
        if self.num_classes is None:
            self._class_ids = np.full(self.num_images, -1, dtype=np.int64)
        else:
            self._class_ids = seed_labels(seeds, self.num_classes, labels, self.label_seed,
                                          first_seed=self.first_seed)

    @property
    def metainfo(self):
        """What the evaluator is told (``dataset_meta``): seed range, classes, label policy."""
        return dict(first_seed=self.first_seed, num_images=self.num_images,
                    num_classes=self.num_classes, labels=self.labels,
                    label_seed=self.label_seed)

    @property
    def class_ids(self):
        """All class ids, int64 ``[num_images]`` (a copy)."""
        return self._class_ids.copy()

    def __len__(self):
        return self.num_images

    def __getitem__(self, idx):
        if not _is_int(idx):
            raise TypeError(f'GenerationSeedsDataset index must be an int, got {idx!r}')
        if idx < 0:
            idx += self.num_images
        if not 0 <= idx < self.num_images:
            raise IndexError(f'GenerationSeedsDataset index {idx} out of range '
                             f'[0, {self.num_images})')
        return {'seed': self.first_seed + int(idx), 'class_id': int(self._class_ids[idx])}

    def __repr__(self):
        classes = ('unconditional' if self.num_classes is None else
                   f'{self.num_classes} classes, {self.labels} labels')
        return (f'GenerationSeedsDataset(seeds {self.first_seed}..'
                f'{self.first_seed + self.num_images - 1}, {classes})')
