"""RefCOCOg (Google split files of REFER) as DSD's text-retrieval questions.

The one rule: every referring sentence of the refs file (all of REFER's splits, in file order)
is one *text retrieval* question among ``1 + num_negatives``: the full COCO image of its ref
against ``[its sentence] + negatives`` (target 0), the negatives being sentences of OTHER refs,
distinct and never equal to the positive's text, drawn by a generator seeded with
``(negative_seed, question index)`` (so a question's negatives do not depend on which split or
subset is read). As the reference, the first ``few_shot`` (5%) of the questions are the training
split and the rest the evaluation split (95,010 sentences: 4,750 train, 90,260 eval). The refs
pickle is read by a restricted unpickler (plain data only, nothing in it runs), or from the JSON
that ``tools/dataset_converters/refcocog_refs_to_json.py`` writes.
"""
import json
import os.path as osp
import random

from mmengine.registry import DATASETS

from .base import ITMDataError, ITMDataset, few_shot_count
from .safe_pickle import read_plain_pickle

__all__ = ['RefCOCOgDataset', 'read_refs', 'sample_negative_sentences']

REFS_FIX = ('Use refs(google).p from REFER\'s refcocog.zip (https://github.com/lichengunc/refer) '
            'unchanged, or its JSON written by tools/dataset_converters/refcocog_refs_to_json.py.')


def _sentence_text(sentence):
    return sentence.get('raw', sentence.get('sent')) if isinstance(sentence, dict) else None


def read_refs(path):
    """The list of REFER ref dicts in ``path`` (``.json``, else a pickle read restrictedly).

    Each ref has ``ref_id``, ``image_id`` and ``sentences`` (dicts with ``raw`` or ``sent``, and
    ``sent_id``); anything else raises :class:`ITMDataError` naming the first bad ref.
    """
    if path.lower().endswith('.json'):
        try:
            with open(path, encoding='utf-8') as f:
                refs = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ITMDataError(f'{path}: expected the REFER refs as a JSON list ({exc}). '
                               f'{REFS_FIX}') from exc
    else:
        refs = read_plain_pickle(path, REFS_FIX)
    if not isinstance(refs, list) or not refs:
        raise ITMDataError(f'{path}: expected a non-empty list of REFER ref dicts, got '
                           f'{type(refs).__name__}{"" if refs else " (empty)"}. {REFS_FIX}')
    for index, ref in enumerate(refs):
        ok = isinstance(ref, dict) and all(k in ref for k in ('ref_id', 'image_id', 'sentences'))
        ok = ok and isinstance(ref['sentences'], list) and all(
            isinstance(_sentence_text(s), str) for s in ref['sentences'])
        if not ok:
            raise ITMDataError(f'{path}: expected every ref to be a dict with ref_id, image_id and '
                               f'sentences (a list of dicts with "raw" or "sent"), but ref '
                               f'{index} is {str(ref)[:120]!r}. {REFS_FIX}')
    return refs


def sample_negative_sentences(ref_sentences, ref_index, positive, count, rng):
    """``count`` distinct sentences of refs other than ``ref_index``, none equal to ``positive``.

    ``ref_sentences``: the sentence texts of every ref (list of lists); a ref is drawn uniformly
    among the others, then one of its sentences uniformly (the reference's scheme). Raises
    :class:`ITMDataError` when the other refs do not hold ``count`` distinct usable texts.
    """
    chosen, others = [], len(ref_sentences) - 1
    for _ in range(50 * count + 100 if others > 0 else 0):
        if len(chosen) == count:
            return chosen
        j = rng.randrange(others)
        texts = ref_sentences[j + (j >= ref_index)]
        if texts:
            text = texts[rng.randrange(len(texts))]
            if text != positive and text not in chosen:
                chosen.append(text)
    if len(chosen) == count:
        return chosen
    # rejection stalls only when few distinct texts remain: draw the rest from what is left
    pool = sorted({t for j, texts in enumerate(ref_sentences) if j != ref_index for t in texts
                   if t != positive} - set(chosen))
    if len(pool) < count - len(chosen):
        raise ITMDataError(
            f'RefCOCOgDataset: the refs other than the one of {positive!r} hold only '
            f'{len(pool) + len(chosen)} distinct sentences; num_negatives={count} needs at least '
            f'that many. Lower num_negatives or use the full refs file.')
    return chosen + rng.sample(pool, count - len(chosen))


@DATASETS.register_module()
class RefCOCOgDataset(ITMDataset):
    """RefCOCOg referring sentences, each against 9 sentences of other refs (text retrieval).

    Args:
        data_root (str): the ``refcocog`` folder of REFER.
        refs (str): the refs file (REFER's pickle, or its JSON conversion).
        instances (str): ``instances.json`` (COCO-style ``images`` with ``id`` and ``file_name``).
        image_dir (str): the folder of the COCO train2014 images.
        split (str): ``'test'`` (the questions after the first ``few_shot``) or ``'train'``
            (the first ``few_shot`` of them).
        few_shot (float | None): the training fraction of the questions (reference: 0.05);
            None: both splits are every question.
        num_negatives (int): negative sentences per question (reference: 9).
        negative_seed (int): seed of the negatives (the reference's were unseeded).
        image_size (int): square side of the images (SD 2.1-base: 512).
    """

    RELEASE = 'RefCOCOg (REFER)'
    LAYOUT = ('DATA_ROOT/refs(google).p (REFER\'s pickle, or its JSON conversion), '
              'DATA_ROOT/instances.json and DATA_ROOT/images/train2014/COCO_train2014_*.jpg.')

    def __init__(self, data_root, refs='refs(google).p', instances='instances.json',
                 image_dir='images/train2014', split='test', few_shot=0.05, num_negatives=9,
                 negative_seed=0, image_size=512, **kwargs):
        if split not in ('test', 'train'):
            raise ITMDataError(f'RefCOCOgDataset: split={split!r}; expected \'train\' (the first '
                               f'few_shot of the questions) or \'test\' (the rest).')
        if isinstance(num_negatives, bool) or not isinstance(num_negatives, int) \
                or num_negatives < 1:
            raise ITMDataError(f'RefCOCOgDataset: num_negatives={num_negatives!r}; expected a '
                               f'positive int (the reference uses 9).')
        if few_shot is not None:
            few_shot_count(1, few_shot)
        self.refs, self.instances, self.image_dir = refs, instances, image_dir
        self.split, self.few_shot = split, few_shot
        self.num_negatives, self.negative_seed = num_negatives, negative_seed
        super().__init__(data_root, image_size=image_size, **kwargs)

    def _file_names(self):
        path = self.require_file(self.root_path(self.instances), 'REFER\'s instances.json')
        fix = 'Use instances.json from REFER\'s refcocog.zip unchanged.'
        try:
            with open(path, encoding='utf-8') as f:
                images = json.load(f)['images']
            return {image['id']: image['file_name'] for image in images}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ITMDataError(f'{path}: expected a JSON object whose "images" list has "id" and '
                               f'"file_name" per image ({type(exc).__name__}: {exc}). '
                               f'{fix}') from exc

    def load_data_list(self):
        refs_path = self.require_file(self.root_path(self.refs), 'REFER\'s refs file')
        refs = read_refs(refs_path)
        file_names = self._file_names()
        image_dir = self.require_dir(self.root_path(self.image_dir),
                                     'the folder of the COCO train2014 images')
        ref_sentences = [[_sentence_text(s) for s in ref['sentences']] for ref in refs]
        pool = [(r, k) for r, ref in enumerate(refs) for k in range(len(ref['sentences']))]
        n_train = 0 if self.few_shot is None else few_shot_count(len(pool), self.few_shot)
        if self.few_shot is None:
            indices = range(len(pool))
        else:
            indices = range(n_train) if self.split == 'train' else range(n_train, len(pool))
        from common.progress import progress
        questions = []
        for index in progress(indices, f'RefCOCOg {self.split} questions'):
            r, k = pool[index]
            ref = refs[r]
            if ref['image_id'] not in file_names:
                raise ITMDataError(f'{refs_path}: ref {ref["ref_id"]} names image_id '
                                   f'{ref["image_id"]}, which {self.root_path(self.instances)} '
                                   f'does not list. Use the instances.json of the same REFER '
                                   f'release as the refs file.')
            positive = ref_sentences[r][k]
            rng = random.Random(f'refcocog:{self.negative_seed}:{index}')
            negatives = sample_negative_sentences(ref_sentences, r, positive,
                                                  self.num_negatives, rng)
            sent_id = ref['sentences'][k].get('sent_id', f'{ref["ref_id"]}_{k}')
            questions.append(self.question(
                sent_id, [osp.join(image_dir, file_names[ref['image_id']])],
                [positive] + negatives, 'text', 'refcocog'))
        return questions
