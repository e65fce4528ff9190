"""Readers of the image-text matching releases, as downloaded, as mmengine datasets.

The one rule: every reader returns *questions* of interface 2 (``question_id``, ``images``
``(I, 3, S, S)`` in [-1, 1], ``texts``, ``target``, ``retrieval``, ``subset``; the correct
candidate first), and a missing or malformed release file raises :class:`ITMDataError`, one
paragraph naming the file, the expected folder layout and the fix. Importing this package
registers ComVG, RefCOCOg, VQAv2 (binary, other) and Winoground in mmengine's root ``DATASETS``.
"""
from .base import (RETRIEVALS, ITMDataError, ITMDataset, check_image_size, few_shot_count,
                   load_image, read_csv_rows)
from .comvg import COMVG_COLUMNS, COMVG_SUBSET_ALIASES, COMVG_SUBSETS, ComVGDataset
from .refcocog import RefCOCOgDataset, read_refs, sample_negative_sentences
from .safe_pickle import PickleRefusedError, read_plain_pickle
from .vqa import VQA_QUESTION_TYPES, VQABinaryDataset, VQAOtherDataset, parse_vqa_line
from .winoground import WinogroundDataset

__all__ = [
    'RETRIEVALS', 'ITMDataError', 'ITMDataset', 'check_image_size', 'few_shot_count',
    'load_image', 'read_csv_rows', 'COMVG_COLUMNS', 'COMVG_SUBSET_ALIASES', 'COMVG_SUBSETS',
    'ComVGDataset', 'RefCOCOgDataset', 'read_refs', 'sample_negative_sentences',
    'PickleRefusedError', 'read_plain_pickle', 'VQA_QUESTION_TYPES', 'VQABinaryDataset',
    'VQAOtherDataset', 'parse_vqa_line', 'WinogroundDataset',
]
