"""Winoground (facebook/winoground, as the Hugging Face dataset repository lays it out).

The one rule: each line of ``examples.jsonl`` is one *pairwise* question: images
``[image_0, image_1]`` and texts ``[caption_0, caption_1]``, image ``k`` matching caption ``k``
(``target`` 0 by convention); the metric scores the 2 x 2 matrix with Winoground's text, image
and group scores. The ``subset`` is the example's ``collapsed_tag`` (``Object``, ``Relation``,
``Both``) when the file has it, else ``'winoground'``.
"""
import json
import os.path as osp

from mmengine.registry import DATASETS

from .base import ITMDataError, ITMDataset

__all__ = ['WinogroundDataset']

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')


@DATASETS.register_module()
class WinogroundDataset(ITMDataset):
    """Winoground's 400 examples as 2 x 2 questions.

    Args:
        data_root (str): the ``data`` folder of the dataset repository.
        examples (str): the JSON-lines file (``id``, ``caption_0``, ``caption_1``, ``image_0``,
            ``image_1``; ``collapsed_tag`` optional).
        image_dir (str): the folder of the extracted ``images.zip`` (``<image_k>.png``).
        image_size (int): square side of the images (SD 2.1-base: 512).
    """

    RELEASE = 'Winoground'
    LAYOUT = ('DATA_ROOT/examples.jsonl (one JSON object a line with id, caption_0, caption_1, '
              'image_0, image_1) and DATA_ROOT/images/<image_0>.png (images.zip extracted).')
    FIELDS = ('id', 'caption_0', 'caption_1', 'image_0', 'image_1')

    def __init__(self, data_root, examples='examples.jsonl', image_dir='images', image_size=512,
                 **kwargs):
        self.examples, self.image_dir = examples, image_dir
        super().__init__(data_root, image_size=image_size, **kwargs)

    def _image_path(self, image_dir, name, path, number):
        candidates = [osp.join(image_dir, name)] if osp.splitext(name)[1] else []
        candidates += [osp.join(image_dir, name + ext) for ext in IMAGE_EXTENSIONS]
        for candidate in candidates:
            if osp.isfile(candidate):
                return candidate
        raise self.layout_error(candidates[0], f'the image {name!r} of line {number} of {path}',
                                'Extract images.zip of the dataset repository into that folder, '
                                'or set image_dir to where the images are.')

    def load_data_list(self):
        path = self.require_file(self.root_path(self.examples), 'Winoground\'s examples.jsonl')
        image_dir = self.require_dir(self.root_path(self.image_dir),
                                     'the folder of Winoground\'s images')
        fix = 'Use examples.jsonl of facebook/winoground unchanged.'
        try:
            with open(path, encoding='utf-8') as f:
                lines = [(n, line) for n, line in enumerate(f, start=1) if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise ITMDataError(f'{path}: expected a UTF-8 JSON-lines file ({exc}). {fix}') from exc
        questions = []
        for number, line in lines:
            try:
                example = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ITMDataError(f'{path}: expected one JSON object per line, but line '
                                   f'{number} is not JSON ({exc}). {fix}') from exc
            missing = [k for k in self.FIELDS if not isinstance(example, dict) or k not in example]
            if missing:
                raise ITMDataError(f'{path}: expected the fields {list(self.FIELDS)} on every '
                                   f'line, but line {number} lacks {missing}. {fix}')
            images = [self._image_path(image_dir, str(example[f'image_{k}']), path, number)
                      for k in (0, 1)]
            questions.append(self.question(
                example['id'], images, [example['caption_0'], example['caption_1']], 'pairwise',
                example.get('collapsed_tag') or 'winoground'))
        return questions
