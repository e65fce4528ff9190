"""Retrieval accuracy of image-text matching scores: accuracy, R@k, Winoground scores.

The one rule: a question is answered correctly at ``k`` when fewer than ``k`` other candidates
score *at least* as high as the target; a tie with the target (or a NaN anywhere in the
comparison) counts as a failure, so a constant scorer gets 0, never credit from the target's
position (every reader puts the target first). Winoground's scores use strict comparisons too.
``dump_pairs`` writes every question's candidate scores, target and subset, from which every
reported number can be recomputed (:func:`retrieval_metrics`).
"""
import json
from collections import OrderedDict

from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from mmengine.registry import METRICS

__all__ = ['ITMRetrievalMetric', 'metrics_from_dump', 'retrieval_metrics', 'target_rank',
           'winoground_outcome']

RETRIEVALS = ('text', 'image', 'pairwise')
WINOGROUND_SCORES = ('text', 'image', 'group')
TIE_RULE = ('a candidate scoring at least as high as the target (a tie) ranks above it; NaN '
            'scores never win')


def _better(a, b):
    """``a > b`` strictly; False when either is NaN."""
    return bool(a > b)


def target_rank(scores, target):
    """1 + the number of other candidates the target does not strictly beat (ties and NaN
    count against it): the target is retrieved at ``k`` when the rank is at most ``k``."""
    s_t = scores[target]
    return 1 + sum(1 for j, s in enumerate(scores) if j != target and not _better(s_t, s))


def winoground_outcome(matrix):
    """Winoground's ``text``, ``image`` and ``group`` outcomes of a 2 x 2 ``matrix[image][text]``
    (image ``k`` matches caption ``k``).

    text: each image prefers its own caption (``m[0][0] > m[0][1]`` and ``m[1][1] > m[1][0]``);
    image: each caption prefers its own image (``m[0][0] > m[1][0]`` and ``m[1][1] > m[0][1]``);
    group: both.
    """
    (a, b), (c, d) = matrix
    text = _better(a, b) and _better(d, c)
    image = _better(a, c) and _better(d, b)
    return dict(text=text, image=image, group=text and image)


def _percent(values):
    return 100.0 * sum(values) / len(values)


def _groups(records):
    """``[(subset or None for all, records)]``: the whole set, then each subset when there are
    several."""
    subsets = list(OrderedDict.fromkeys(r['subset'] for r in records))
    groups = [(None, records)]
    if len(subsets) > 1:
        groups += [(s, [r for r in records if r['subset'] == s]) for s in subsets]
    return groups


def retrieval_metrics(records, scores=('dsd', 'attention', 'itm'), topk=(1, 5)):
    """The metrics of question records (each: ``subset``, ``retrieval``, ``target``, ``scores``
    ``{kind: [candidate scores]}``, 2 x 2 nested lists for ``'pairwise'``), in percent.

    Keys, per score kind, for all questions and (when there are several) per subset
    ``{kind}[/{subset}]/...``: retrieval questions ``accuracy`` (= ``R@1``) and ``R@k`` for each
    ``k`` in ``topk`` not larger than the fewest candidates of the group; pairwise questions
    ``text_score``, ``image_score``, ``group_score``.
    """
    metrics = OrderedDict()
    ranked = [r for r in records if r['retrieval'] != 'pairwise']
    pairwise = [r for r in records if r['retrieval'] == 'pairwise']
    for kind in scores:
        for subset, group in (_groups(ranked) if ranked else []):
            head = kind if subset is None else f'{kind}/{subset}'
            ranks = [target_rank(r['scores'][kind], r['target']) for r in group]
            fewest = min(len(r['scores'][kind]) for r in group)
            metrics[f'{head}/accuracy'] = _percent([rank <= 1 for rank in ranks])
            for k in topk:
                if k <= fewest:
                    metrics[f'{head}/R@{k}'] = _percent([rank <= k for rank in ranks])
        for subset, group in (_groups(pairwise) if pairwise else []):
            head = kind if subset is None else f'{kind}/{subset}'
            outcomes = [winoground_outcome(r['scores'][kind]) for r in group]
            for name in WINOGROUND_SCORES:
                metrics[f'{head}/{name}_score'] = _percent([o[name] for o in outcomes])
    return metrics


def _float(value):
    if hasattr(value, 'tolist'):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_float(v) for v in value]
    return float(value)


@METRICS.register_module()
class ITMRetrievalMetric(BaseMetric):
    """Accuracy, R@k and Winoground scores of each score kind, overall and per subset (percent).

    Consumes the model's outputs of interface 3: one dict per question with ``question_id``,
    ``subset``, ``retrieval`` (``'text'``, ``'image'`` or ``'pairwise'``), ``target`` and
    ``scores`` ``{kind: [score per candidate]}`` (``[image][text]`` 2 x 2 lists for pairwise).
    Ties with the target count as failures. Metric names: ``'{prefix}/{kind}/accuracy'``,
    ``'{prefix}/{kind}/R@5'``, ``'{prefix}/{kind}/{subset}/accuracy'``,
    ``'{prefix}/{kind}/group_score'``, ... (see :func:`retrieval_metrics`).

    Args:
        scores (sequence of str): the score kinds to report (each output must have them).
        topk (sequence of int): the ``k`` of ``R@k`` (reported when every question of the group
            has at least ``k`` candidates); accuracy (= R@1) is always reported.
        dump_pairs (str | None): a JSON file written (atomically) with every question's record
            (``tools/test.py --out FILE.json`` points it there).
        prefix (str): the metric names' prefix. Defaults to ``'itm'``.
    """

    default_prefix = 'itm'

    def __init__(self, scores=('dsd', 'attention', 'itm'), topk=(1, 5), dump_pairs=None,
                 collect_device='cpu', prefix=None, **kwargs):
        super().__init__(collect_device=collect_device, prefix=prefix, **kwargs)
        self.kinds = (scores, ) if isinstance(scores, str) else tuple(scores)
        if not self.kinds:
            raise ValueError('ITMRetrievalMetric: scores is empty; name at least one score kind, '
                             "e.g. scores=('dsd', ).")
        self.topk = tuple(int(k) for k in ((topk, ) if isinstance(topk, int) else topk))
        if any(k < 1 for k in self.topk):
            raise ValueError(f'ITMRetrievalMetric: topk={topk!r}; every k must be at least 1.')
        self.dump_pairs = dump_pairs

    def _record(self, sample):
        if not isinstance(sample, dict):
            sample = sample.to_dict()
        qid = sample.get('question_id', '?')
        missing = [k for k in ('question_id', 'subset', 'retrieval', 'target', 'scores')
                   if k not in sample]
        if missing:
            raise ValueError(f'ITMRetrievalMetric: the output of question {qid!r} lacks '
                             f'{missing}; the model must return one dict per question with '
                             f'question_id, subset, retrieval, target and scores {{kind: [...]}}.')
        retrieval, target = sample['retrieval'], int(_float(sample['target']))
        if retrieval not in RETRIEVALS:
            raise ValueError(f'ITMRetrievalMetric: question {qid!r} has retrieval={retrieval!r}; '
                             f'expected one of {RETRIEVALS}.')
        absent = [k for k in self.kinds if k not in sample['scores']]
        if absent:
            raise ValueError(f'ITMRetrievalMetric: the output of question {qid!r} has the score '
                             f'kinds {sorted(sample["scores"])} but not {absent}; set the '
                             f'metric\'s scores to kinds the model returns.')
        scores = {k: _float(sample['scores'][k]) for k in self.kinds}
        for kind, values in scores.items():
            if retrieval == 'pairwise':
                ok = len(values) == 2 and all(isinstance(v, list) and len(v) == 2 for v in values)
            else:
                ok = isinstance(values, list) and 0 <= target < len(values) and all(
                    isinstance(v, float) for v in values)
            if not ok:
                raise ValueError(f'ITMRetrievalMetric: question {qid!r} ({retrieval!r}, target '
                                 f'{target}) has {kind} scores {str(values)[:80]}; expected a '
                                 f'2 x 2 [image][text] list for pairwise questions, else one '
                                 f'float per candidate with the target among them.')
        return dict(question_id=str(sample['question_id']), subset=str(sample['subset']),
                    retrieval=retrieval, target=target, scores=scores)

    def process(self, data_batch, data_samples):
        for sample in data_samples:
            self.results.append(self._record(sample))

    def compute_metrics(self, results):
        metrics = retrieval_metrics(results, self.kinds, self.topk)
        print_log('\n' + self.format_table(metrics, results), logger='current')
        if self.dump_pairs:
            self.write_pairs(self.dump_pairs, results)
        return metrics

    def format_table(self, metrics, results):
        """One printable table: a row per (subset, score kind), a column per metric."""
        from prettytable import PrettyTable
        counts = OrderedDict()
        for r in results:
            counts[r['subset']] = counts.get(r['subset'], 0) + 1
        rows, columns = OrderedDict(), []
        for key, value in metrics.items():
            parts = key.split('/')
            kind, name, subset = parts[0], parts[-1], '/'.join(parts[1:-1]) or 'all'
            rows.setdefault((subset, kind), {})[name] = value
            if name not in columns:
                columns.append(name)
        table = PrettyTable()
        table.field_names = ['subset', 'questions', 'score'] + columns
        for (subset, kind), values in rows.items():
            n = len(results) if subset == 'all' else counts.get(subset, 0)
            table.add_row([subset, n, kind] + [f'{values[c]:.2f}' if c in values else '-'
                                               for c in columns])
        table.align['subset'] = 'l'
        return f'Image-text matching (%, ties count as failures):\n{table.get_string()}'

    def question_records(self, results=None):
        """JSON-ready records: the outputs plus, per score kind, the target's ``rank`` (retrieval)
        or the Winoground outcomes (pairwise)."""
        records = []
        for r in (self.results if results is None else results):
            record = dict(r)
            if r['retrieval'] == 'pairwise':
                record['winoground'] = {k: winoground_outcome(v) for k, v in r['scores'].items()}
            else:
                record['rank'] = {k: target_rank(v, r['target']) for k, v in r['scores'].items()}
            records.append(record)
        return records

    def write_pairs(self, path, results=None):
        """Write ``{'scores', 'topk', 'ties', 'questions': [records]}`` to ``path`` as JSON,
        atomically (non-finite scores as ``NaN``/``Infinity``, as Python's json writes them)."""
        from common.io import atomic_write_bytes
        payload = dict(scores=list(self.kinds), topk=list(self.topk), ties=TIE_RULE,
                       questions=self.question_records(results))
        atomic_write_bytes(path, json.dumps(payload, indent=1).encode('utf-8'))
        print_log(f'ITMRetrievalMetric: wrote {len(payload["questions"])} questions to {path}',
                  logger='current')


def metrics_from_dump(path):
    """Recompute the metrics (without prefix) from a file :meth:`ITMRetrievalMetric.write_pairs`
    wrote."""
    with open(path, encoding='utf-8') as f:
        payload = json.load(f)
    return retrieval_metrics(payload['questions'], payload['scores'], payload['topk'])

