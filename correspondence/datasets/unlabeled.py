"""Pairs of unlabeled images (DistillDIFT's unsupervised setting): COCO / ImageNet folders.

The one rule: an unlabeled pair is a pair dict of the data contract (``correspondence/README.md``)
with no keypoints (``src_kps`` / ``trg_kps`` are ``float32 [0, 2]``) plus ``src_teacher_key`` /
``trg_teacher_key``, the images' paths relative to the image root, the keys under which
:class:`~correspondence.datasets.teacher_shards.LoadTeacherFeatures` finds their precomputed
teacher features. Pairs are drawn once, from a seeded numpy ``Generator``, so a dataset is the
same list of pairs in every process.

Pairing (``UnlabeledPairsDataset(pairing=...)``):

* ``'retrieval'`` (DistillDIFT's ``distilled_us``): each embedding dimension is min-max normalised
  over the image set, images are scored against each other by dot product, and each source ``i``
  (drawn uniformly) is paired with one of its ``top_k`` best-scoring other images, uniformly.
  Needs shards written with an ``embedder`` (:class:`DINOv2ClsEmbedder`).
* ``'random'``: two distinct images, uniformly.
* ``'same_category'``: two distinct images of one category, the first folder under the image root
  (ImageNet's ``n01440764/...``).
"""
import os.path as osp

import numpy as np
import torch
from mmengine.dataset import BaseDataset
from mmengine.registry import DATASETS, MODELS
from torch import nn

from .base import CorrespondenceDataError, image_size, make_pair, progress
from .teacher_shards import IMAGE_EXTENSIONS, TeacherShards, list_images

PAIRINGS = ('retrieval', 'random', 'same_category')


def retrieval_pairs(embeddings, num_pairs, top_k=10, seed=0, chunk=1024):
    """``num_pairs`` pairs ``(i, j)`` of images by embedding retrieval, as DistillDIFT pairs COCO.

    Each of the ``D`` dimensions of ``embeddings [N, D]`` is min-max normalised over the ``N``
    images (a constant dimension becomes 0), scores are dot products, ``j == i`` is excluded;
    sources ``i`` are drawn uniformly and ``j`` uniformly among the ``top_k`` best of ``i``
    (fewer when ``N - 1 < top_k``). Only the drawn sources' scores are computed (in chunks), so
    118k COCO images cost ``num_pairs x N`` dot products, not ``N^2``.
    """
    emb = torch.as_tensor(embeddings, dtype=torch.float32)
    if emb.dim() != 2 or len(emb) < 2:
        raise CorrespondenceDataError(
            f'retrieval_pairs: expected embeddings [N, D] of at least 2 images, got shape '
            f'{tuple(emb.shape)}. Precompute them with an embedder (see '
            f'tools/precompute_teacher_features.py).')
    low, high = emb.min(0).values, emb.max(0).values
    span = high - low
    emb = (emb - low) / torch.where(span > 0, span, torch.ones_like(span))
    n = len(emb)
    k = min(int(top_k), n - 1)
    rng = np.random.default_rng(seed)
    sources = rng.integers(0, n, size=int(num_pairs))
    picks = rng.integers(0, k, size=int(num_pairs))
    unique = np.unique(sources)
    best = {}
    for start in range(0, len(unique), chunk):
        rows = torch.as_tensor(unique[start:start + chunk])
        scores = emb[rows] @ emb.T
        scores[torch.arange(len(rows)), rows] = -float('inf')
        top = scores.topk(k, dim=1).indices
        for r, t in zip(rows.tolist(), top.tolist()):
            best[r] = t
    return [(int(i), int(best[int(i)][p])) for i, p in zip(sources, picks)]


def random_pairs(n, num_pairs, seed=0):
    """``num_pairs`` pairs of two distinct indices in ``range(n)``, uniformly."""
    if n < 2:
        raise CorrespondenceDataError(f'random pairs need at least 2 images, got {n}.')
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, size=int(num_pairs))
    j = (i + rng.integers(1, n, size=int(num_pairs))) % n  # uniform over the others
    return [(int(a), int(b)) for a, b in zip(i, j)]


def category_of(key):
    """The first folder component of an image-root-relative key ('' for a top-level file)."""
    return key.split('/', 1)[0] if '/' in key else ''


def same_category_pairs(keys, num_pairs, seed=0):
    """Pairs of two distinct images of one category (first folder under the image root);
    the source uniformly among images whose category has another image."""
    groups = {}
    for idx, key in enumerate(keys):
        groups.setdefault(category_of(key), []).append(idx)
    if '' in groups and len(groups) == 1:
        raise CorrespondenceDataError(
            'same_category pairing: expected images in one folder per category under the image '
            'root (ImageNet-style root/n01440764/x.JPEG), but every image is at the top level. '
            "Use pairing='retrieval' or 'random' for a flat folder such as COCO's train2017.")
    eligible = [i for members in groups.values() if len(members) > 1 for i in members]
    if not eligible:
        raise CorrespondenceDataError(
            'same_category pairing: no category folder holds two images; nothing to pair.')
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(int(num_pairs)):
        i = eligible[rng.integers(len(eligible))]
        members = groups[category_of(keys[i])]
        j = members[(members.index(i) + rng.integers(1, len(members))) % len(members)]
        pairs.append((int(i), int(j)))
    return pairs


@DATASETS.register_module()
class UnlabeledPairsDataset(BaseDataset):
    """Pairs of unlabeled images, for distillation (keypoint-free pair dicts).

    Args:
        shards (str | None): a teacher-feature folder (``tools/precompute_teacher_features.py``);
            its images are the dataset's images, and ``'retrieval'`` uses its embeddings.
        image_root (str | None): the images' root; default the one the shards were written
            from. Without ``shards``: the folder whose images (recursive) are paired.
        pairing (str): ``'retrieval'``, ``'random'`` or ``'same_category'`` (module docstring).
        top_k (int): retrieval candidates per source (DistillDIFT: 10).
        num_pairs (int): pairs drawn (DistillDIFT ``distilled_us``: 12000).
        seed (int): seed of the pairing.
        extensions (tuple): image extensions when listing ``image_root`` (no shards).
        pipeline, test_mode, lazy_init, ...: as mmengine's ``BaseDataset``.
    """

    METAINFO = dict(classes=())

    def __init__(self, shards=None, image_root=None, pairing='retrieval', top_k=10,
                 num_pairs=12000, seed=0, extensions=IMAGE_EXTENSIONS, pipeline=(), **kwargs):
        if pairing not in PAIRINGS:
            raise CorrespondenceDataError(
                f'UnlabeledPairsDataset: pairing={pairing!r} is not one of {PAIRINGS}.')
        if shards is None and image_root is None:
            raise CorrespondenceDataError(
                'UnlabeledPairsDataset: expected shards (a teacher-feature folder) or image_root '
                '(a folder of images); got neither. Set one in the dataset config.')
        if shards is None and pairing == 'retrieval':
            raise CorrespondenceDataError(
                "UnlabeledPairsDataset: pairing='retrieval' ranks images by their embeddings, "
                'which live in teacher shards written with an embedder; got image_root only. '
                'Precompute shards with an `embedder` (tools/precompute_teacher_features.py) and '
                "set shards=..., or use pairing='random' / 'same_category'.")
        self.shards_root = shards
        self.image_root = image_root
        self.pairing = pairing
        self.top_k = int(top_k)
        self.num_pairs = int(num_pairs)
        self.seed = int(seed)
        self.extensions = tuple(extensions)
        kwargs.setdefault('serialize_data', True)
        super().__init__(pipeline=list(pipeline), **kwargs)

    def _serialize_data(self):
        if not self.data_list:
            return np.zeros(0, dtype=np.uint8), np.zeros(0, dtype=np.int64)
        return super()._serialize_data()

    def load_data_list(self):
        shards = TeacherShards(self.shards_root) if self.shards_root is not None else None
        root = self.image_root
        if root is None:
            root = shards.manifest.get('image_root')
        if root is None:
            raise CorrespondenceDataError(
                f'UnlabeledPairsDataset: the shard folder {self.shards_root} records no '
                'image_root; set image_root=... in the dataset config.')
        root = osp.abspath(osp.expanduser(root))
        if shards is not None:
            keys = shards.keys()
        else:
            keys = list_images(root, self.extensions)
        if self.pairing == 'retrieval':
            keys, emb = shards.embeddings()
            pairs = retrieval_pairs(emb, self.num_pairs, self.top_k, self.seed)
        elif self.pairing == 'random':
            pairs = random_pairs(len(keys), self.num_pairs, self.seed)
        else:
            pairs = same_category_pairs(keys, self.num_pairs, self.seed)
        sizes = {}

        def size_of(idx):
            if idx not in sizes:
                sizes[idx] = image_size(osp.join(root, keys[idx]))
            return sizes[idx]

        data = []
        empty = np.zeros((0, 2), dtype=np.float32)
        for n, (i, j) in enumerate(progress(pairs, 'unlabeled pairs', len(pairs))):
            data.append(make_pair(
                pair_id=f'{n:06d}-{i}-{j}', category=category_of(keys[i]),
                src_img_path=osp.join(root, keys[i]), trg_img_path=osp.join(root, keys[j]),
                src_imsize=size_of(i), trg_imsize=size_of(j), src_kps=empty, trg_kps=empty,
                src_teacher_key=keys[i], trg_teacher_key=keys[j],
                trg_category=category_of(keys[j])))
        return data


# ---------------------------------------------------------------------------------- embedder
@MODELS.register_module()
class DINOv2ClsEmbedder(nn.Module):
    """``[B, 3, H, W]`` images in ``[0, 1]`` -> ``[B, D]``: DINOv2's CLS token after the final
    layernorm (DINOv2's ``x_norm_clstoken``; DistillDIFT's retrieval embedding, with registers).

    Args:
        pretrained / config: as :class:`~correspondence.models.extractors.DINOv2Extractor`.
        size (int | tuple | None): resize the images (bilinear, antialiased) to this ``(H, W)``
            first; None: use them as given (multiples of 14).
        dtype (str): compute dtype.
    """

    def __init__(self, pretrained=None, config=None, size=None, dtype='float32'):
        super().__init__()
        from ..models.extractors import DINOv2Extractor
        self.dino = DINOv2Extractor(pretrained=pretrained, config=config, layer=-1, dtype=dtype)
        self.size = None if size is None else (
            (int(size), int(size)) if isinstance(size, (int, float)) else tuple(int(s)
                                                                              for s in size))

    @torch.no_grad()
    def forward(self, images):
        from ..models.extractors import check_images
        check_images(images, 'DINOv2ClsEmbedder')
        if self.size is not None:
            images = torch.nn.functional.interpolate(images.float(), size=self.size,
                                                     mode='bilinear', align_corners=False,
                                                     antialias=True)
        model = self.dino.model
        out = model(pixel_values=self.dino.normalize(images).to(self.dino.compute_dtype))
        return out.last_hidden_state[:, 0].float()  # transformers applies the final layernorm
