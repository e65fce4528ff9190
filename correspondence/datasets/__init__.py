"""Readers of the official correspondence releases, as downloaded, as mmengine datasets.

The one rule: every reader's ``load_data_list()`` returns the pair dicts of
the data contract (``correspondence/README.md``) (keypoints ``float32 [K, 2]`` in original pixels, only points
visible in both images), and a missing or malformed release file raises
:class:`CorrespondenceDataError`, one paragraph naming the file, what was expected and the fix.
Importing this package registers the readers in mmengine's root ``DATASETS`` registry, with the
pair transforms, the teacher-feature shards (``teacher_shards``) and the unlabeled-image pairs
(``unlabeled``) used for distillation, and the PASCAL-Part semantic-vs-spatial pairs
(``disentangled``).
"""
from .base import CorrespondenceDataError, PairDataset
from .cub import CUBPairsDataset
from .disentangled import (DISENTANGLED_CLASSES, PAIR_KINDS, DisentangledPairsDataset,
                           counterpart, rle_decode, rle_encode)
from .pf_pascal import PF_PASCAL_CLASSES, PFPascalDataset
from .pf_willow import PF_WILLOW_CATEGORIES, PF_WILLOW_CLASSES, PFWillowDataset
from .spair import SPAIR_CATEGORIES, SPAIR_DIFFICULTY, SPair71kDataset
from .teacher_shards import (LoadTeacherFeatures, TeacherShardError, TeacherShards,
                             write_shards)
from .transforms import LoadImagePair, PackPair, ResizePair, pair_collate
from .unlabeled import (DINOv2ClsEmbedder, UnlabeledPairsDataset, random_pairs, retrieval_pairs,
                        same_category_pairs)

__all__ = [
    'CorrespondenceDataError', 'PairDataset', 'SPair71kDataset', 'PFWillowDataset',
    'PFPascalDataset', 'CUBPairsDataset', 'SPAIR_CATEGORIES', 'SPAIR_DIFFICULTY',
    'PF_WILLOW_CATEGORIES', 'PF_WILLOW_CLASSES', 'PF_PASCAL_CLASSES', 'LoadImagePair',
    'PackPair', 'ResizePair', 'pair_collate', 'DisentangledPairsDataset', 'DISENTANGLED_CLASSES',
    'PAIR_KINDS', 'counterpart', 'rle_encode', 'rle_decode', 'LoadTeacherFeatures',
    'TeacherShardError', 'TeacherShards', 'write_shards', 'DINOv2ClsEmbedder',
    'UnlabeledPairsDataset', 'random_pairs', 'retrieval_pairs', 'same_category_pairs',
]
