"""VQAv2 as DSD's two matching tasks: binary (image retrieval) and other (text retrieval).

The one rule: ``VQABinaryDataset`` turns each line ``COCO_val2014_xxx.jpg*<prefix>: <question>
<answer statement>`` of the reference's ``test3.txt`` into an *image retrieval* question among
``1 + num_negatives``: the statement (the part after the first ``': '``) against ``[its image] +
other images of the file`` (target 0), the negatives distinct, never the positive, drawn by a
generator seeded with ``(negative_seed, question index)``, or read from the reference's cached
``test3_neg_samples.json``. ``VQAOtherDataset`` turns each row of ``vqa_text_{test,train}.csv``
(``sentence, pos_image_id, neg_sentence_1..9``; a sentence = the question followed by a candidate
answer, the negatives = the same question with 9 other answers) into a *text retrieval* question
among 10 for the COCO image ``pos_image_id`` (target 0).
"""
import json
import os.path as osp
import random
import re

from mmengine.registry import DATASETS

from .base import ITMDataError, ITMDataset, few_shot_count, read_csv_rows

__all__ = ['VQABinaryDataset', 'VQAOtherDataset', 'VQA_QUESTION_TYPES', 'parse_vqa_line']

# the reference's line prefixes ("The question is asking about <kind>: ...") by question type
VQA_QUESTION_TYPES = {'binary': 'yes or no', 'others': 'others', 'numbers': 'numbers'}
_PREFIX = re.compile(r'^The question is asking about (.+?): ')


def parse_vqa_line(line):
    """``(image file, question type or None, statement)`` of one ``test3.txt`` line.

    The statement drops the ``"The question is asking about ...: "`` prefix (the reference keeps
    what follows the first ``': '``). Returns None for a line without ``*``.
    """
    if '*' not in line:
        return None
    image, text = line.split('*', 1)
    match = _PREFIX.match(text)
    kind = None
    if match:
        kind = next((k for k, v in VQA_QUESTION_TYPES.items() if v == match.group(1)), None)
    return image.strip(), kind, text.split(': ', 1)[-1].strip()


@DATASETS.register_module()
class VQABinaryDataset(ITMDataset):
    """VQAv2 yes/no statements, each against its image and 9 other images (image retrieval).

    Args:
        data_root (str): the ``vqav2`` folder.
        lines (str): the reference's ``test3.txt`` (``<image file>*<text>`` lines).
        image_dir (str): the folder of the COCO val2014 images.
        question_type (str | None): keep the lines of this type: ``'binary'`` (the reference's
            vqa_binary: "yes or no"), ``'others'``, ``'numbers'``; None keeps every line.
        num_negatives (int): negative images per question (reference: 9).
        negative_seed (int): seed of the negatives (the reference's were unseeded).
        negatives_json (str | None): the reference's cache ``test3_neg_samples.json`` (a list of
            ``[image, [negative images], statement]``): when given, the questions are read from
            it, with its negatives, and ``lines`` is not read.
        image_size (int): square side of the images (SD 2.1-base: 512).
    """

    RELEASE = 'VQAv2 (DSD\'s binary split)'
    LAYOUT = ('DATA_ROOT/test3.txt (lines "COCO_val2014_<id>.jpg*The question is asking about '
              'yes or no: <question> <statement>"), optionally DATA_ROOT/test3_neg_samples.json, '
              'and DATA_ROOT/val2014/COCO_val2014_<id>.jpg.')

    def __init__(self, data_root, lines='test3.txt', image_dir='val2014', question_type='binary',
                 num_negatives=9, negative_seed=0, negatives_json=None, image_size=512,
                 **kwargs):
        if question_type is not None and question_type not in VQA_QUESTION_TYPES:
            raise ITMDataError(f'VQABinaryDataset: question_type={question_type!r}; expected one '
                               f'of {sorted(VQA_QUESTION_TYPES)} or None (every line).')
        if isinstance(num_negatives, bool) or not isinstance(num_negatives, int) \
                or num_negatives < 1:
            raise ITMDataError(f'VQABinaryDataset: num_negatives={num_negatives!r}; expected a '
                               f'positive int (the reference uses 9).')
        self.lines, self.image_dir, self.question_type = lines, image_dir, question_type
        self.num_negatives, self.negative_seed = num_negatives, negative_seed
        self.negatives_json = negatives_json
        super().__init__(data_root, image_size=image_size, **kwargs)

    @property
    def subset_name(self):
        return 'vqa_' + (self.question_type or 'all')

    def _read_lines(self):
        path = self.require_file(self.root_path(self.lines), 'the VQA statements file')
        fix = 'Use the reference\'s test3.txt unchanged (one "<image file>*<text>" per line).'
        try:
            with open(path, encoding='utf-8') as f:
                raw = [(n, line.rstrip('\n')) for n, line in enumerate(f, start=1)]
        except (OSError, UnicodeDecodeError) as exc:
            raise ITMDataError(f'{path}: expected a UTF-8 text file ({exc}). {fix}') from exc
        kept = []
        for number, line in raw:
            if not line.strip():
                continue
            parsed = parse_vqa_line(line)
            if parsed is None or not parsed[0]:
                raise ITMDataError(f'{path}: expected "<image file>*<text>" on every line, but '
                                   f'line {number} is {line[:80]!r}. {fix}')
            if self.question_type is None or parsed[1] == self.question_type:
                kept.append((parsed[0], parsed[2]))
        if not kept:
            raise ITMDataError(f'{path}: no line has the question type {self.question_type!r} '
                               f'(prefix "The question is asking about '
                               f'{VQA_QUESTION_TYPES.get(self.question_type)}: "). {fix}')
        return kept

    def _sample(self, kept):
        """The reference's scheme, seeded: other images of the file, here distinct."""
        pool = list(dict.fromkeys(image for image, _ in kept))  # unique, in order
        position = {image: i for i, image in enumerate(pool)}
        if len(pool) - 1 < self.num_negatives:
            raise ITMDataError(f'{self.root_path(self.lines)}: only {len(pool)} distinct images; '
                               f'num_negatives={self.num_negatives} needs at least '
                               f'{self.num_negatives + 1}. Lower num_negatives.')
        entries = []
        for index, (image, text) in enumerate(kept):
            rng = random.Random(f'vqa:{self.negative_seed}:{index}')
            own = position[image]
            picks = rng.sample(range(len(pool) - 1), self.num_negatives)
            entries.append((image, [pool[j + (j >= own)] for j in picks], text))
        return entries

    def _read_negatives_json(self):
        path = self.require_file(self.root_path(self.negatives_json),
                                 'the reference\'s negatives cache (test3_neg_samples.json)')
        fix = ('Use the test3_neg_samples.json the reference wrote, or set negatives_json=None to '
               'draw seeded negatives from the lines file.')
        try:
            with open(path, encoding='utf-8') as f:
                entries = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ITMDataError(f'{path}: expected a JSON list ({exc}). {fix}') from exc
        if not isinstance(entries, list) or not entries:
            raise ITMDataError(f'{path}: expected a non-empty JSON list of [image, [negative '
                               f'images], statement]. {fix}')
        for index, entry in enumerate(entries):
            ok = (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str)
                  and isinstance(entry[1], list) and all(isinstance(n, str) for n in entry[1])
                  and isinstance(entry[2], str) and entry[1] and entry[0] not in entry[1])
            if not ok:
                raise ITMDataError(f'{path}: expected every entry to be [image, [negative images '
                                   f'other than it], statement], but entry {index} is '
                                   f'{str(entry)[:120]!r}. {fix}')
        return [tuple(entry) for entry in entries]

    def load_data_list(self):
        if self.negatives_json is not None:
            entries = self._read_negatives_json()
        else:
            entries = self._sample(self._read_lines())
        image_dir = self.require_dir(self.root_path(self.image_dir),
                                     'the folder of the COCO val2014 images')
        return [self.question(index, [osp.join(image_dir, p) for p in [image] + negatives],
                              [text], 'image', self.subset_name)
                for index, (image, negatives, text) in enumerate(entries)]


@DATASETS.register_module()
class VQAOtherDataset(ITMDataset):
    """VQAv2 question + answer sentences, each against 9 other answers (text retrieval).

    Args:
        data_root (str): the ``vqav2`` folder.
        csv (str | None): None = ``vqa_text_test.csv`` (test, DSD's data/ folder) or
            ``vqa_text_train.csv`` (train, DSD's Google Drive folder).
        image_dir (str | None): None = ``val2014`` (test) or ``train2014`` (train).
        split (str): ``'test'`` or ``'train'``: the default files and the COCO image names
            (``COCO_val2014_%012d.jpg`` or ``COCO_train2014_%012d.jpg``).
        few_shot (float | None): keep the first fraction of the rows (the reference's few-shot
            training set: 0.05 of ``vqa_text_train.csv``); None = every row.
        image_size (int): square side of the images (SD 2.1-base: 512).
    """

    RELEASE = 'VQAv2 (DSD\'s other split)'
    LAYOUT = ('DATA_ROOT/vqa_text_test.csv and DATA_ROOT/vqa_text_train.csv (columns sentence, '
              'pos_image_id, neg_sentence_1..neg_sentence_9), DATA_ROOT/val2014/COCO_val2014_'
              '<12-digit id>.jpg and DATA_ROOT/train2014/COCO_train2014_<12-digit id>.jpg.')
    SPLITS = {'test': ('vqa_text_test.csv', 'val2014', 'COCO_val2014_{:012d}.jpg'),
              'train': ('vqa_text_train.csv', 'train2014', 'COCO_train2014_{:012d}.jpg')}

    def __init__(self, data_root, csv=None, image_dir=None, split='test', few_shot=None,
                 image_size=512, **kwargs):
        if split not in self.SPLITS:
            raise ITMDataError(f'VQAOtherDataset: split={split!r}; expected \'test\' '
                               f'(vqa_text_test.csv) or \'train\' (vqa_text_train.csv).')
        if few_shot is not None:
            few_shot_count(1, few_shot)
        self.split, self.few_shot = split, few_shot
        self.csv = csv if csv is not None else self.SPLITS[split][0]
        self.image_dir = image_dir if image_dir is not None else self.SPLITS[split][1]
        super().__init__(data_root, image_size=image_size, **kwargs)

    def load_data_list(self):
        path = self.require_file(self.root_path(self.csv), f'the VQA {self.split} CSV file')
        fix = 'Use the reference\'s vqa_text_*.csv unchanged.'
        rows = read_csv_rows(path, ('sentence', 'pos_image_id', 'neg_sentence_1'), fix)
        header = list(rows[0][1]) if rows else []
        negatives = []
        while f'neg_sentence_{len(negatives) + 1}' in header:
            negatives.append(f'neg_sentence_{len(negatives) + 1}')
        if self.few_shot is not None:
            rows = rows[:few_shot_count(len(rows), self.few_shot)]
        image_dir = self.require_dir(self.root_path(self.image_dir),
                                     f'the folder of the COCO {self.SPLITS[self.split][1]} images')
        template = self.SPLITS[self.split][2]
        questions = []
        for index, (number, row) in enumerate(rows):
            try:
                image = template.format(int(float(row['pos_image_id'])))
            except ValueError:
                raise ITMDataError(f'{path}: expected a COCO image id (a number) in pos_image_id, '
                                   f'but line {number} has {row["pos_image_id"]!r}. {fix}') from None
            questions.append(self.question(
                index, [osp.join(image_dir, image)],
                [row['sentence']] + [row[name] for name in negatives], 'text', 'vqa_other'))
        return questions
