"""Pairing of unlabeled images (correspondence/datasets/unlabeled.py): retrieval against embedding
sets whose neighbours are known by construction, same-category and random pairs, the dataset
through the pair pipeline with precomputed teacher features, and the CLS embedder."""
import os.path as osp

import numpy as np
import pytest
import torch

from correspondence.datasets import CorrespondenceDataError
from correspondence.datasets.teacher_shards import (LoadTeacherFeatures, TeacherShards,
                                                    make_compute, write_shards)
from correspondence.datasets.transforms import LoadImagePair, PackPair, ResizePair
from correspondence.datasets.unlabeled import (DINOv2ClsEmbedder, UnlabeledPairsDataset,
                                               random_pairs, retrieval_pairs,
                                               same_category_pairs)
from correspondence.models.extractors import IMAGENET_MEAN, IMAGENET_STD, DINOv2Extractor
from tests.helpers.tiny_models import save_dinov2_models

from .test_teacher_shards import IMAGES, write_images

# Three clusters of two: each image's nearest other image (dot product) is its partner.
CLUSTERS = np.array([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 1.0, 0.0], [0.1, 0.9, 0.0],
                     [0.0, 0.0, 1.0], [0.0, 0.1, 0.9]])
PARTNER = {0: 1, 1: 0, 2: 3, 3: 2, 4: 5, 5: 4}


def test_retrieval_top1_is_the_known_neighbour():
    pairs = retrieval_pairs(CLUSTERS, num_pairs=60, top_k=1, seed=0)
    assert len(pairs) == 60 and all(j == PARTNER[i] for i, j in pairs)
    assert {i for i, _ in pairs} == set(range(6))  # sources drawn over the whole set
    assert pairs == retrieval_pairs(CLUSTERS, num_pairs=60, top_k=1, seed=0)
    assert pairs != retrieval_pairs(CLUSTERS, num_pairs=60, top_k=1, seed=1)


def test_retrieval_normalises_each_dimension_over_the_set():
    # an affine change of every dimension is undone by the min-max normalisation...
    scaled = CLUSTERS * np.array([1.0, 100.0, 3.0]) + np.array([5.0, 3.0, 0.5])
    assert retrieval_pairs(scaled, 40, top_k=1) == retrieval_pairs(CLUSTERS, 40, top_k=1)
    # ...while raw dot products would pair every image with image 2 or 3 (the large dimension)
    raw = scaled @ scaled.T
    np.fill_diagonal(raw, -np.inf)
    assert set(raw.argmax(1)) <= {2, 3}


def test_retrieval_top_k_against_a_brute_force_reference():
    emb = np.random.default_rng(3).normal(size=(40, 8))
    norm = (emb - emb.min(0)) / (emb.max(0) - emb.min(0))
    scores = norm @ norm.T
    np.fill_diagonal(scores, -np.inf)
    top = np.argsort(-scores, axis=1)[:, :5]
    pairs = retrieval_pairs(torch.tensor(emb), num_pairs=2000, top_k=5, seed=0, chunk=7)
    assert all(j in top[i] for i, j in pairs)
    # j uniform among the top 5: every candidate of a frequent source shows up
    counts = {}
    for i, j in pairs:
        counts.setdefault(i, set()).add(j)
    assert all(counts[i] == set(top[i]) for i in counts if sum(p[0] == i for p in pairs) >= 40)
    # fewer images than top_k + 1: all the others are candidates
    assert {j for _, j in retrieval_pairs(CLUSTERS, 200, top_k=50)} == set(range(6))
    with pytest.raises(CorrespondenceDataError, match=r'embeddings \[N, D\] of at least 2'):
        retrieval_pairs(CLUSTERS[:1], 3)


def test_same_category_pairs_stay_in_their_folder():
    keys = ['n01/a.jpg', 'n01/b.jpg', 'n01/c.jpg', 'n02/a.jpg', 'n02/b.jpg', 'n03/only.jpg']
    pairs = same_category_pairs(keys, 300, seed=0)
    assert all(i != j and keys[i].split('/')[0] == keys[j].split('/')[0] for i, j in pairs)
    assert 5 not in {i for i, _ in pairs} | {j for _, j in pairs}  # alone in its folder
    assert {i for i, _ in pairs} == set(range(5))
    with pytest.raises(CorrespondenceDataError, match='every image is at the top level'):
        same_category_pairs(['a.jpg', 'b.jpg'], 3)


def test_random_pairs_are_distinct_and_cover_all():
    pairs = random_pairs(4, 500, seed=0)
    assert all(i != j for i, j in pairs)
    assert {(i, j) for i, j in pairs} == {(i, j) for i in range(4) for j in range(4) if i != j}


@pytest.fixture(scope='module')
def shards(tmp_path_factory):
    base = tmp_path_factory.mktemp('unlabeled')
    models = save_dinov2_models(str(base / 'models'))
    root = write_images(str(base / 'images'))
    teacher = DINOv2Extractor(pretrained=models['reg'], layer=-1)
    embedder = DINOv2ClsEmbedder(pretrained=models['reg'])
    out = str(base / 'shards')
    write_shards(out, sorted(IMAGES), make_compute(teacher, root, 'stretched', 28, embedder),
                 dict(teacher='tiny', frame='stretched', size=28), shard_size=2,
                 info=dict(image_root=root))
    return dict(out=out, root=root, models=models, teacher=teacher)


def test_dataset_through_the_pipeline(shards):
    pipeline = [dict(type='LoadImagePair'), dict(type='ResizePair', frame='stretched', size=28),
                dict(type='LoadTeacherFeatures', shards=shards['out']), dict(type='PackPair')]
    ds = UnlabeledPairsDataset(shards=shards['out'], pairing='retrieval', top_k=2, num_pairs=6,
                               seed=0, pipeline=pipeline)
    assert len(ds) == 6
    keys, emb = TeacherShards(shards['out']).embeddings()
    expected = retrieval_pairs(emb, 6, top_k=2, seed=0)
    for n, (i, j) in enumerate(expected):
        info = ds.get_data_info(n)
        assert (info['src_teacher_key'], info['trg_teacher_key']) == (keys[i], keys[j])
        assert info['src_img_path'] == osp.join(shards['root'], keys[i])
        assert info['src_imsize'] == IMAGES[keys[i]] and info['category'] == keys[i].split('/')[0]
        assert info['src_kps'].shape == (0, 2) and info['src_kps'].dtype == np.float32
    sample = ds[0]
    data = sample['data_samples']
    assert sample['inputs']['src'].shape == (3, 28, 28) and sample['inputs']['src'].dtype == \
        torch.uint8
    image = sample['inputs']['trg'].float()[None] / 255
    with torch.no_grad():
        direct = shards['teacher'](image)[0]
    assert data['trg_teacher'].dtype == torch.float32 and data['trg_teacher'].shape == (32, 2, 2)
    torch.testing.assert_close(data['trg_teacher'], direct, atol=2e-3, rtol=2e-3)
    assert data['trg_frame']['size'] == (28, 28) and data['trg_kps'].shape == (0, 2)
    # the same steps by hand give the same sample
    pair = ds.get_data_info(0)
    by_hand = PackPair()(LoadTeacherFeatures(shards['out'])(ResizePair('stretched', 28)(
        LoadImagePair()(pair))))
    assert torch.equal(by_hand['data_samples']['src_teacher'], data['src_teacher'])


def test_dataset_from_an_image_folder(shards):
    ds = UnlabeledPairsDataset(image_root=shards['root'], pairing='same_category', num_pairs=20,
                               extensions=('.png',))
    for n in range(len(ds)):
        info = ds.get_data_info(n)
        assert info['src_teacher_key'].split('/')[0] == info['trg_teacher_key'].split('/')[0]
        assert info['src_teacher_key'] != info['trg_teacher_key']
    with pytest.raises(CorrespondenceDataError, match=r"pairing='retrieval' ranks images by "
                                                      r'their embeddings.*got image_root only'):
        UnlabeledPairsDataset(image_root=shards['root'])
    with pytest.raises(CorrespondenceDataError, match=r"pairing='nearest' is not one of"):
        UnlabeledPairsDataset(image_root=shards['root'], pairing='nearest')


def test_retrieval_needs_embeddings(shards, tmp_path):
    out = str(tmp_path / 'no_emb')
    write_shards(out, sorted(IMAGES), make_compute(shards['teacher'], shards['root'],
                                                   'stretched', 28),
                 dict(teacher='tiny'), shard_size=5, info=dict(image_root=shards['root']))
    with pytest.raises(CorrespondenceDataError, match='written without one. Add an `embedder`'):
        UnlabeledPairsDataset(shards=out)
    assert len(UnlabeledPairsDataset(shards=out, pairing='random', num_pairs=3)) == 3


def test_cls_embedder_is_the_final_layernorm_cls_token(shards):
    from transformers import AutoModel
    model = AutoModel.from_pretrained(shards['models']['reg'])
    images = torch.rand(2, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(
        1, 3, 1, 1)
    with torch.no_grad():
        hidden = model(pixel_values=(images - mean) / std, output_hidden_states=True)
        expected = model.layernorm(hidden.hidden_states[-1])[:, 0]
    got = DINOv2ClsEmbedder(pretrained=shards['models']['reg'])(images)
    torch.testing.assert_close(got, expected)
    with pytest.raises(ValueError, match=r'takes float RGB images in \[0, 1\]'):
        DINOv2ClsEmbedder(pretrained=shards['models']['reg'])(images[0])
