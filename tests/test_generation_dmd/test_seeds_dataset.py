"""GenerationSeedsDataset: seeds, label policies (fixed by the seed), collation, errors."""
import numpy as np
import pytest
import torch
from mmengine.dataset import default_collate, pseudo_collate
from mmengine.registry import DATASETS

from generation_dmd.datasets import GenerationSeedsDataset, GenerationSeedsError


def test_items_are_consecutive_seeds_and_unconditional_labels_are_minus_one():
    ds = GenerationSeedsDataset(5, first_seed=100)
    assert len(ds) == 5
    assert [ds[i] for i in range(5)] == [{'seed': 100 + i, 'class_id': -1} for i in range(5)]
    assert ds[-1] == {'seed': 104, 'class_id': -1}
    with pytest.raises(IndexError):
        ds[5]
    assert ds.metainfo == dict(first_seed=100, num_images=5, num_classes=None, labels='random',
                               label_seed=0)


def test_balanced_labels_are_index_modulo_classes():
    ds = GenerationSeedsDataset(25, first_seed=50000, num_classes=10, labels='balanced')
    assert ds.class_ids.tolist() == [i % 10 for i in range(25)]
    assert np.bincount(GenerationSeedsDataset(50, num_classes=10,
                                              labels='balanced').class_ids).tolist() == [5] * 10


def test_random_labels_are_fixed_by_the_seed_not_by_the_range():
    big = GenerationSeedsDataset(400, num_classes=10, label_seed=3)
    part = GenerationSeedsDataset(7, first_seed=123, num_classes=10, label_seed=3)
    # seed 125's label is the same whether it is the 126th of 400 images or the 3rd of 7
    assert [part[i]['class_id'] for i in range(7)] == big.class_ids[123:130].tolist()
    assert big.class_ids.tolist() == [
        int(np.random.default_rng([3, s]).integers(10)) for s in range(400)]
    counts = np.bincount(big.class_ids, minlength=10)
    assert counts.min() >= 20 and counts.sum() == 400  # all classes drawn, roughly uniformly
    other = GenerationSeedsDataset(400, num_classes=10, label_seed=4)
    assert (other.class_ids != big.class_ids).mean() > 0.8  # another label_seed, other labels


def test_collation_and_registry():
    ds = DATASETS.build(dict(type='GenerationSeedsDataset', num_images=4, num_classes=3,
                             labels='balanced'))
    batch = default_collate([ds[i] for i in range(4)])
    assert batch['seed'].dtype == torch.int64 and batch['seed'].tolist() == [0, 1, 2, 3]
    assert batch['class_id'].tolist() == [0, 1, 2, 0]
    assert pseudo_collate([ds[0], ds[1]]) == {'seed': [0, 1], 'class_id': [0, 1]}


@pytest.mark.parametrize('kwargs, message', [
    (dict(num_images=0), r'num_images=0; expected a positive integer'),
    (dict(num_images=4, labels='rand', num_classes=3),
     r"labels='rand' is not a label policy; expected 'random' .* or 'balanced'"),
    (dict(num_images=4, num_classes=0), r'num_classes=0; expected None'),
    (dict(num_images=4, first_seed=-1), r'first_seed=-1; expected an integer >= 0'),
])
def test_bad_settings_are_one_paragraph_errors(kwargs, message):
    with pytest.raises(GenerationSeedsError, match=message):
        GenerationSeedsDataset(**kwargs)
