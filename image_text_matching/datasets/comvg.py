"""ComVG (Compositional Visual Genome, from ComCLIP) as DSD evaluates and few-shot trains on it.

The one rule: each CSV row is one *image retrieval* question among 2: its ``sentence`` against
``[pos_image, neg_image]`` (target 0), where the negative image differs from the positive in the
subject, the object or the verb of the sentence's triplet; ``neg_value`` names which, and is the
question's ``subset`` (``'subject'``, ``'object'``, ``'verb'``: DSD's ComVG_sub / _obj / _verb).
The evaluation file has 5,400 rows (279 sentences): object 2,584, subject 1,536, verb 1,280.
"""
import os.path as osp
import re

from mmengine.registry import DATASETS

from .base import ITMDataError, ITMDataset, few_shot_count, read_csv_rows

__all__ = ['ComVGDataset', 'COMVG_COLUMNS', 'COMVG_SUBSETS', 'COMVG_SUBSET_ALIASES']

COMVG_COLUMNS = ('id', 'sentence', 'pos_triplet', 'neg_triplet', 'pos_image_id', 'neg_image_id',
                 'neg_value')
COMVG_SUBSETS = ('subject', 'object', 'verb')
# other spellings of the three kinds (DSD's dataset names ComVG_sub/_obj/_verb, "predicate"),
# mapped onto the release's neg_value; any raw neg_value present in the file is accepted as is
COMVG_SUBSET_ALIASES = {'sub': 'subject', 'subj': 'subject', 'obj': 'object', 'pred': 'verb',
                        'predicate': 'verb', 'relation': 'verb'}
SPLIT_DEFAULTS = {'test': ('compositional_visual_genome.csv', 'vg_concept'),
                  'train': ('comvg_train.csv', 'VG_100K')}


def canonical_subset(value, aliases=COMVG_SUBSET_ALIASES):
    """The kind a raw ``neg_value`` or a requested subset names (``'obj'`` -> ``'object'``)."""
    key = str(value).strip()
    return aliases.get(key.lower(), key.lower() if key.lower() in COMVG_SUBSETS else key)


def _image_id(cell):
    """``'180'`` for ``'180'`` or ``'180.0'`` (a CSV re-saved by pandas with missing values)."""
    cell = cell.strip()
    return re.sub(r'\.0+$', '', cell) if re.fullmatch(r'\d+\.0+', cell) else cell


@DATASETS.register_module()
class ComVGDataset(ITMDataset):
    """ComVG questions: a sentence, its image and a hard-negative image (image retrieval of 2).

    Args:
        data_root (str): the folder holding the CSV files and the image folders.
        csv (str | None): the CSV file; None = ``compositional_visual_genome.csv`` (test) or
            ``comvg_train.csv`` (train, from DSD's Google Drive folder).
        image_dir (str | None): the folder of ``<image_id>.jpg``; None = ``vg_concept`` (test)
            or ``VG_100K`` (train, Visual Genome's images).
        subset (str | list | None): keep only these kinds of negatives (``'subject'``,
            ``'object'``, ``'verb'``, their aliases ``sub``/``obj``/``pred``/``predicate``, or
            any raw ``neg_value`` of the file); None keeps every row.
        split (str): ``'test'`` or ``'train'`` (only chooses the default files).
        few_shot (float | None): keep the first fraction of the file's rows, before the subset
            filter (the reference's few-shot split: 0.05 of ``comvg_train.csv``); None = all.
        image_size (int): square side of the images (SD 2.1-base: 512).
        image_suffix (str): the images' file extension. Defaults to ``'.jpg'``.
    """

    RELEASE = 'ComVG'
    LAYOUT = ('DATA_ROOT/compositional_visual_genome.csv (columns id, sentence, pos_triplet, '
              'neg_triplet, pos_image_id, neg_image_id, neg_value), DATA_ROOT/comvg_train.csv '
              '(same columns; from DSD\'s Google Drive folder), DATA_ROOT/vg_concept/<image_id>.jpg '
              '(test images) and DATA_ROOT/VG_100K/<image_id>.jpg (Visual Genome images, train).')

    def __init__(self, data_root, csv=None, image_dir=None, subset=None, split='test',
                 few_shot=None, image_size=512, image_suffix='.jpg', **kwargs):
        if split not in SPLIT_DEFAULTS:
            raise ITMDataError(f'ComVGDataset: split={split!r}; expected \'test\' '
                               f'(compositional_visual_genome.csv) or \'train\' (comvg_train.csv).')
        self.split = split
        self.csv = csv if csv is not None else SPLIT_DEFAULTS[split][0]
        self.image_dir = image_dir if image_dir is not None else SPLIT_DEFAULTS[split][1]
        self.subset = None if subset is None else (
            [subset] if isinstance(subset, str) else list(subset))
        self.few_shot = few_shot
        if few_shot is not None:
            few_shot_count(1, few_shot)  # checks the value before any file is read
        self.image_suffix = image_suffix
        super().__init__(data_root, image_size=image_size, **kwargs)

    def load_data_list(self):
        path = self.require_file(self.root_path(self.csv), f'the ComVG {self.split} CSV file')
        fix = 'Use the CSV of the ComVG release (DSD\'s data/ folder) unchanged.'
        rows = read_csv_rows(path, COMVG_COLUMNS, fix)
        if self.few_shot is not None:
            rows = rows[:few_shot_count(len(rows), self.few_shot)]
        image_dir = self.require_dir(self.root_path(self.image_dir),
                                     f'the folder of the ComVG {self.split} images')
        if self.subset is not None:
            present = sorted({canonical_subset(r['neg_value']) for _, r in rows})
            wanted = []
            for name in self.subset:
                kind = canonical_subset(name)
                if kind not in present:
                    raise ITMDataError(
                        f'ComVGDataset: subset={name!r} names no rows of {path}; expected one of '
                        f'the neg_value kinds present there: {present} (aliases: '
                        f'{sorted(COMVG_SUBSET_ALIASES)}). Fix subset in the dataset config, or '
                        f'set it to None for every row.')
                wanted.append(kind)
            rows = [(n, r) for n, r in rows if canonical_subset(r['neg_value']) in wanted]
        questions = []
        for number, row in rows:
            images = [osp.join(image_dir, _image_id(row[key]) + self.image_suffix)
                      for key in ('pos_image_id', 'neg_image_id')]
            qid = row['id'].strip() or f'line{number}'
            questions.append(self.question(qid, images, [row['sentence']], 'image',
                                           canonical_subset(row['neg_value'])))
        return questions
