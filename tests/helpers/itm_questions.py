"""Fixed image-text matching questions (interface 2) for tests of the ITM models, and a tiny
registered dataset that serves them to mmengine's Runner.

Texts use only lowercase letters and spaces: the tiny SD pipeline of ``tiny_models`` has a
character-level tokenizer of 8 tokens (start, 6 characters, end; longer texts are truncated).
"""
import torch
from mmengine.registry import DATASETS

TEXTS = ('red cat', 'big dog', 'sky', 'tree')


def make_questions(size=16, seed=0):
    """``dict(text=..., image=..., pairwise=...)``: one question of each retrieval kind, images
    ``(I, 3, size, size)`` in [-1, 1] drawn from ``seed``."""
    gen = torch.Generator().manual_seed(seed)

    def images(n):
        return torch.rand(n, 3, size, size, generator=gen) * 2 - 1

    return dict(
        text=dict(question_id='t0', images=images(1), texts=list(TEXTS[:3]), target=1,
                  retrieval='text', subset='obj'),
        image=dict(question_id='i0', images=images(3), texts=[TEXTS[3]], target=2,
                   retrieval='image', subset='verb'),
        pairwise=dict(question_id='p0', images=images(2), texts=list(TEXTS[:2]), target=0,
                      retrieval='pairwise', subset='wino'))


@DATASETS.register_module()
class ITMFixedQuestions(torch.utils.data.Dataset):
    """The questions of :func:`make_questions` of the given ``kinds``, repeated ``repeat`` times."""

    metainfo = dict(name='itm-fixed-questions')

    def __init__(self, kinds=('text', ), repeat=1, size=16, seed=0):
        questions = make_questions(size, seed)
        self.items = [questions[k] for k in kinds] * int(repeat)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return dict(self.items[index])
