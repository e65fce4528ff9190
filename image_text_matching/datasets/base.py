"""What every image-text matching reader shares: the question item, image loading, errors.

The one rule: an item is one *question* (interface 2 of ``image_text_matching``): ``question_id``
(str), ``images`` float ``(I, 3, S, S)`` in [-1, 1], ``texts`` (list of ``T`` str), ``target``
(index of the correct candidate), ``retrieval`` (``'text'``: one image, ``T`` candidate texts;
``'image'``: one text, ``I`` candidate images; ``'pairwise'``: Winoground's 2 x 2, image ``k``
matches text ``k``, target 0), ``subset`` (str), plus ``image_paths``. Every reader puts the
correct candidate first (``target == 0``, as the reference does); the metric counts a tie with the
target as a failure, so that order can never win a question. A release file that is missing or
not in its format raises :class:`ITMDataError`: one paragraph naming the file, what was expected
(the release's folder layout) and the fix.
"""
import csv
import math
import os.path as osp

import numpy as np
from mmengine.dataset import BaseDataset

__all__ = ['ITMDataError', 'ITMDataset', 'RETRIEVALS', 'check_image_size', 'few_shot_count',
           'load_image', 'read_csv_rows']

RETRIEVALS = ('text', 'image', 'pairwise')


class ITMDataError(ValueError):
    """A release file is missing or malformed; the message is one paragraph with the fix."""


def check_image_size(image_size):
    """``image_size`` as an int, or :class:`ITMDataError` unless it is a positive multiple of 8."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0 \
            or image_size % 8:
        raise ITMDataError(
            f'image_size={image_size!r}: expected a positive multiple of 8 (the VAE downsamples '
            f'by 8), e.g. 512 for Stable Diffusion 2.1-base as the reference, or 16/32 for tiny '
            f'test models. Set image_size in the dataset config.')
    return image_size


def load_image(path, image_size):
    """The image at ``path`` as float32 ``(3, S, S)`` in [-1, 1]: RGB, stretched to ``S x S``.

    One LANCZOS resize to the square (aspect ratio not kept, as the reference's
    ``img.resize((512, 512))``; the reference then applies a LANCZOS resize to the nearest
    multiple of 32, a no-op at 512). Raises :class:`ITMDataError` for an unreadable image.
    """
    import torch
    from PIL import Image
    try:
        with Image.open(path) as image:
            image = image.convert('RGB').resize((image_size, image_size), Image.LANCZOS)
    except (OSError, ValueError) as exc:
        raise ITMDataError(f'{path}: expected a readable image ({exc}). Re-extract the release '
                           f'archive; the file may be truncated.') from exc
    pixels = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(pixels.transpose(2, 0, 1).copy())


def few_shot_count(total, fraction):
    """How many of ``total`` items the first ``fraction`` is: ``floor(total * fraction)``, as the
    reference's ``int(total * 0.05)`` (with a 1e-9 guard against float round-off such as
    ``0.29 * 100 = 28.999...``). ``fraction`` must be in (0, 1]."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
            or not 0 < fraction <= 1:
        raise ITMDataError(f'few_shot={fraction!r}: expected a fraction in (0, 1] (0.05 = the '
                           f'first 5%, the reference\'s few-shot split) or None for every '
                           f'question. Set few_shot in the dataset config.')
    return int(math.floor(total * fraction + 1e-9))


def read_csv_rows(path, required, fix):
    """``[(line number, {column: cell})]`` of a CSV file with a header row.

    ``required``: column names that must be in the header. Cells are kept as text (``''`` for an
    empty cell, never NaN). A file that is not such a CSV raises :class:`ITMDataError`.
    """
    try:
        with open(path, newline='', encoding='utf-8-sig') as f:
            lines = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ITMDataError(f'{path}: expected a readable CSV file ({exc}). {fix}') from exc
    numbered = [(n, row) for n, row in enumerate(lines, start=1) if any(c.strip() for c in row)]
    if not numbered:
        raise ITMDataError(f'{path}: expected a header row with the columns {list(required)}, '
                           f'but the file is empty. {fix}')
    header = [h.strip() for h in numbered[0][1]]
    missing = [name for name in required if name not in header]
    if missing:
        raise ITMDataError(f'{path}: expected the columns {list(required)}, but {missing} are '
                           f'missing from the header {header}. {fix}')
    rows = []
    for number, row in numbered[1:]:
        if len(row) != len(header):
            raise ITMDataError(f'{path}: expected {len(header)} cells in every row (the header\'s '
                               f'columns), but line {number} has {len(row)}. {fix}')
        rows.append((number, dict(zip(header, row))))
    return rows


class ITMDataset(BaseDataset):
    """``BaseDataset`` of image-text matching questions; subclasses read one release.

    Subclasses set ``RELEASE`` (its name) and ``LAYOUT`` (the folder layout, quoted in errors)
    and return :meth:`question` dicts from ``load_data_list``; images are read at item time.

    Args:
        data_root (str): the folder of the release; relative file arguments are read under it.
        image_size (int): side of the square images (a multiple of 8; SD 2.1-base: 512).
        stride (int): keep every ``stride``-th question (after split, subset and few-shot), e.g.
            50 for the reference's validation subsample. Defaults to 1.
        max_questions (int | None): then keep at most this many (the reference validates on
            100). Defaults to None (all).
        pipeline (list): transforms applied to each item after the images are loaded.
    """

    RELEASE = 'the release'
    LAYOUT = ''

    def __init__(self, data_root, image_size=512, stride=1, max_questions=None, pipeline=(),
                 **kwargs):
        if not data_root:
            raise ITMDataError(f'{type(self).__name__}: data_root is empty; expected the folder '
                               f'of {self.RELEASE}, laid out as {self.LAYOUT} Set data_root in '
                               f'the dataset config.')
        self.image_size = check_image_size(image_size)
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            raise ITMDataError(f'stride={stride!r}: expected a positive int (1 keeps every '
                               f'question, 50 every 50th).')
        if max_questions is not None and (isinstance(max_questions, bool)
                                          or not isinstance(max_questions, int)
                                          or max_questions < 1):
            raise ITMDataError(f'max_questions={max_questions!r}: expected a positive int or '
                               f'None (all questions).')
        self.stride, self.max_questions = stride, max_questions
        kwargs.setdefault('serialize_data', True)
        super().__init__(data_root=osp.abspath(osp.expanduser(data_root)),
                         pipeline=list(pipeline), **kwargs)

    # ------------------------------------------------------------------ paths and errors

    def root_path(self, path):
        """``path`` under ``data_root`` unless absolute."""
        path = osp.expanduser(str(path))
        return path if osp.isabs(path) else osp.join(self.data_root, path)

    def layout_error(self, path, what, fix=''):
        """:class:`ITMDataError` for a missing ``path`` that should be ``what``."""
        fix = fix or (f'Point data_root at the folder of {self.RELEASE} (now {self.data_root}) '
                      f'or set the file arguments of {type(self).__name__}.')
        return ITMDataError(f'{path}: expected {what}, but it does not exist. {self.RELEASE} is '
                            f'read as laid out like this: {self.LAYOUT} {fix}')

    def require_file(self, path, what, fix=''):
        if not osp.isfile(path):
            raise self.layout_error(path, what, fix)
        return path

    def require_dir(self, path, what, fix=''):
        if not osp.isdir(path):
            raise self.layout_error(path, what, fix)
        return path

    # ------------------------------------------------------------------ items

    @staticmethod
    def question(question_id, image_paths, texts, retrieval, subset, target=0):
        """One question dict (without the pixels), checked against its retrieval kind."""
        image_paths, texts = [str(p) for p in image_paths], [str(t) for t in texts]
        if retrieval not in RETRIEVALS:
            raise ValueError(f'retrieval={retrieval!r}: expected one of {RETRIEVALS}')
        shape = (len(image_paths), len(texts))
        if (retrieval == 'text' and shape[0] != 1) or (retrieval == 'image' and shape[1] != 1) \
                or (retrieval == 'pairwise' and shape != (2, 2)):
            raise ValueError(f'a {retrieval!r} question has {shape[0]} images and {shape[1]} '
                             f'texts; expected 1 image (text), 1 text (image) or 2 x 2 (pairwise)')
        n = max(shape) if retrieval != 'pairwise' else 2
        if not 0 <= target < n:
            raise ValueError(f'target={target} is not a candidate index of {n} candidates')
        return dict(question_id=str(question_id), image_paths=image_paths, texts=texts,
                    target=int(target), retrieval=retrieval, subset=str(subset))

    def filter_data(self):
        """Every ``stride``-th question, at most ``max_questions`` of them."""
        data = self.data_list[::self.stride]
        return data if self.max_questions is None else data[:self.max_questions]

    def _serialize_data(self):
        """mmengine's serialization (one pickled buffer the dataloader workers share) without
        its ``gc.collect()`` (a full collection per dataset: 0.3 s with torch loaded, seconds in
        a long process), and accepting an empty list (a subset filter may leave no question)."""
        if not self.data_list:
            return np.zeros(0, dtype=np.uint8), np.zeros(0, dtype=np.int64)
        import pickle
        buffers = [np.frombuffer(pickle.dumps(info, protocol=4), dtype=np.uint8)
                   for info in self.data_list]
        address = np.cumsum(np.asarray([len(b) for b in buffers], dtype=np.int64))
        self.data_list.clear()
        return np.concatenate(buffers), address

    def load_images(self, paths):
        """``(I, 3, S, S)`` float32 in [-1, 1]; a missing file names the expected layout."""
        import torch
        images = []
        for path in paths:
            if not osp.isfile(path):
                raise self.layout_error(path, f'an image of {self.RELEASE}',
                                        'Extract the images into that folder, or set image_dir '
                                        '(relative to data_root, or absolute) to where they are.')
            images.append(load_image(path, self.image_size))
        return torch.stack(images)

    def prepare_data(self, idx):
        item = self.get_data_info(idx)
        item['images'] = self.load_images(item['image_paths'])
        return self.pipeline(item)
