"""Captioned handwritten digits: the offline demo's image-text data (``make demo-itm``).

Two datasets over scikit-learn's digits (``common.datasets.digits``: same images, same
train/test split, nothing downloaded), each digit captioned ``"a handwritten seven"``:

* :class:`CaptionedDigitsDataset` trains the text-conditioned pixel DDPM: an mmpretrain item
  (``img`` uint8, ``gt_label``) plus ``caption`` (pack it with
  ``PackInputs(algorithm_keys=('caption', ))``);
* :class:`DigitsITMDataset` asks image-text matching questions in the subtree's item format
  (``image_text_matching/README.md``): one digit against the ten captions (text retrieval among
  10, ``target`` = the digit), collated with ``pseudo_collate``.

The one rule: the candidate captions are always the ten :func:`digit_captions` in class order,
so candidate ``k`` is digit ``k`` in every question; binary hard-negative accuracy is read from
the same ten scores (:data:`HARD_NEGATIVES`), never from a second scoring run.
"""
import numpy as np
import torch
from mmengine.dataset import BaseDataset
from mmengine.registry import DATASETS

from common.datasets.digits import (DigitsDataset, _load_digits, digits_split_indices,
                                    upsample_digits)

DIGIT_WORDS = ('zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine')
DEFAULT_TEMPLATE = 'a handwritten {}'
# Each digit's hard negative: the other digit whose mean training image (train split, 32 x 32,
# any size gives the same) is nearest in pixel space (tests/test_tools/test_demo_itm.py
# recomputes it). As unordered pairs: 0/9, 1/8, 2/8, 3/9, 1/4, 5/8, 4/6, 7/8.
HARD_NEGATIVES = {0: 9, 1: 8, 2: 8, 3: 9, 4: 1, 5: 8, 6: 4, 7: 8, 8: 1, 9: 3}


def digit_captions(template=DEFAULT_TEMPLATE):
    """The ten captions, digit ``k`` at index ``k``: ``template.format(word)``."""
    if '{}' not in template:
        raise ValueError(f'caption template {template!r} has no "{{}}" for the digit\'s word; '
                         f'use e.g. {DEFAULT_TEMPLATE!r}.')
    return [template.format(word) for word in DIGIT_WORDS]


def nearest_mean_digit(images, labels):
    """For each class, the other class whose mean image is nearest (squared L2 in pixels)."""
    x = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
    labels = np.asarray(labels)
    classes = np.unique(labels)
    means = np.stack([x[labels == c].mean(0) for c in classes])
    dist = ((means[:, None] - means[None]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    return {int(c): int(classes[j]) for c, j in zip(classes, dist.argmin(1))}


def few_shot_count(total, few_shot):
    """How many leading items a ``few_shot`` fraction keeps: ``int(total * few_shot)``, at
    least 1 (the reference's "first 5%")."""
    if few_shot is None:
        return total
    if not 0.0 < float(few_shot) <= 1.0:
        raise ValueError(f'few_shot={few_shot} must be a fraction in (0, 1] (0.05 = the first '
                         f'5% of the split, as the DSD reference) or None for all of it.')
    return max(1, int(total * float(few_shot)))


@DATASETS.register_module()
class CaptionedDigitsDataset(DigitsDataset):
    """:class:`common.datasets.digits.DigitsDataset` with a caption per digit.

    Args:
        template (str): the caption with ``{}`` for the digit's word (``"a handwritten {}"``).
        **kwargs: :class:`DigitsDataset` arguments (``split``, ``image_size``, ``pipeline``...).
    """

    def __init__(self, template=DEFAULT_TEMPLATE, **kwargs):
        self.captions = digit_captions(template)
        super().__init__(**kwargs)

    def load_data_list(self):
        items = super().load_data_list()
        for item in items:
            item['caption'] = self.captions[item['gt_label']]
        return items


@DATASETS.register_module()
class DigitsITMDataset(BaseDataset):
    """Text retrieval among the ten digit captions: one question per digit of a split.

    Items (the subtree's question format): ``question_id`` (``digits-<split>-<row>``, the row of
    ``load_digits()``), ``images`` float ``(1, 3, S, S)`` in [-1, 1] (``(x - 127.5) / 127.5`` of
    the uint8 digit, the DDPM trainer's normalisation), ``texts`` the ten captions in class order,
    ``target`` the digit, ``retrieval='text'``, ``subset='captions10'``, ``label`` the digit.

    Args:
        split (str): ``'train'`` or ``'test'`` (the digits split: 1,197 / 600 images).
        few_shot (float | None): keep the first ``int(n * few_shot)`` digits of the split (in
            ``load_digits()`` order; the reference's "few-shot" = first 5%).
        number (int | None): keep the first ``number`` digits (after ``few_shot``).
        image_size (int): side of the images (32, as the demo's DDPM).
        template (str): caption template.
        split_seed (int), test_size (int): the digits split (as ``DigitsDataset``).
    """

    METAINFO = dict(classes=DIGIT_WORDS)

    def __init__(self,
                 split='test',
                 few_shot=None,
                 number=None,
                 image_size=32,
                 template=DEFAULT_TEMPLATE,
                 split_seed=0,
                 test_size=600,
                 **kwargs):
        _, labels = _load_digits()
        indices = digits_split_indices(labels, split, test_size, split_seed)
        indices = indices[:few_shot_count(len(indices), few_shot)]
        if number is not None:
            if int(number) < 1:
                raise ValueError(f'DigitsITMDataset number={number} must be at least 1 (or None '
                                 f'for the whole split).')
            indices = indices[:int(number)]
        self.split = split
        self.image_size = int(image_size)
        self.captions = digit_captions(template)
        self._digit_rows = indices
        kwargs.setdefault('ann_file', '')
        kwargs.setdefault('serialize_data', False)
        super().__init__(**kwargs)

    def load_data_list(self):
        images, labels = _load_digits()
        pixels = upsample_digits(images[self._digit_rows], self.image_size)  # [N, S, S, 3] uint8
        x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().sub(127.5).div(127.5)
        return [
            dict(question_id=f'digits-{self.split}-{int(i)}', images=x[n:n + 1].clone(),
                 texts=list(self.captions), target=int(labels[i]), retrieval='text',
                 subset='captions10', label=int(labels[i]))
            for n, i in enumerate(self._digit_rows)
        ]
