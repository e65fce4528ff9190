"""Evaluate correspondence models in this process, without an mmengine ``Runner``.

The one rule: this is the computation ``tools/test.py CONFIG`` runs, step for step (the
dataset's own pipeline, ``pair_collate``, the model in eval mode under ``no_grad``,
``model.test_step`` = its data preprocessor + ``predict``, ``PCKMetric.process`` per batch and
``evaluate`` at the end), so for the same config, pairs and batch size the metrics are the
numbers ``tools/test.py`` prints. Sweeps use it to evaluate many variants in one process:
:func:`evaluate_many` reads each batch once and hands it to every variant.

    parts = build_test_parts(cfg)                    # model, dataset, metric, batch size
    metrics, records = evaluate(parts.model, parts.dataset, parts.metric,
                                batch_size=parts.batch_size)

``records`` are the metric's per-pair records (``PCKMetric.pair_records``), the ``pairs`` of the
``--out FILE.json`` dump of ``tools/test.py``.
"""
import copy
import logging
from types import SimpleNamespace

import torch
from mmengine.logging import MMLogger

from ..datasets.base import progress as progress_bar
from ..datasets.transforms import pair_collate


def subset_indices(length, num=None):
    """``num`` dataset indices spread evenly over ``range(length)`` (all of them when ``num`` is
    None or not smaller): ``i * length // num``, so a subset of SPair-71k's category-sorted test
    split still covers every category."""
    if num is None or num >= length:
        return list(range(length))
    if num < 1:
        raise ValueError(f'num_pairs={num}: evaluate at least one pair (or None for all '
                         f'{length}).')
    return [i * length // num for i in range(num)]


def _check_metric(metric, name=''):
    if not (hasattr(metric, 'process') and hasattr(metric, 'evaluate')
            and hasattr(metric, 'pair_records')):
        what = f' {name!r}' if name else ''
        raise TypeError(
            f'the metric{what} is a {type(metric).__name__}, but offline evaluation needs a '
            'metric with per-pair records (process, evaluate and pair_records, as PCKMetric); '
            "use dict(type='PCKMetric', ...) as the config's test_evaluator.")


def evaluate_many(models, dataset, metrics, batch_size=8, progress=True, indices=None,
                  desc='evaluate', quiet=False):
    """Evaluate several models on one dataset, reading and collating each batch once.

    Args:
        models (dict[str, nn.Module]): name -> correspondence model (``test_step``).
        dataset: a dataset whose pipeline packs pairs (``PackPair``).
        metrics (dict[str, PCKMetric]): name -> its own metric instance (same names as
            ``models``; each metric's stored results are consumed).
        batch_size (int): pairs per batch (use the config's ``test_dataloader.batch_size`` to
            reproduce ``tools/test.py`` exactly).
        progress (bool): a progress bar over the batches (when stderr is a terminal).
        indices (list[int] | None): dataset indices to evaluate, in order (default all).
        quiet (bool): keep the metric's PCK tables out of the log (sweeps print their own).

    Returns:
        dict[str, tuple]: name -> ``(metrics dict, per-pair records)``.
    """
    if set(models) != set(metrics):
        raise ValueError(f'evaluate_many needs one metric per model: models {sorted(models)}, '
                         f'metrics {sorted(metrics)}.')
    for name, metric in metrics.items():
        _check_metric(metric, name)
        metric.results.clear()
    if batch_size < 1:
        raise ValueError(f'batch_size={batch_size}: use at least 1.')
    indices = list(range(len(dataset))) if indices is None else list(indices)
    if not indices:
        raise ValueError('offline evaluation got no pair to evaluate (an empty dataset or '
                         'subset); check the dataset\'s data_root and split.')
    for model in models.values():
        model.eval()
    batches = [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]
    if progress:
        batches = progress_bar(batches, desc, total=len(batches))
    with torch.no_grad():
        for chunk in batches:
            batch = pair_collate([dataset[i] for i in chunk])
            for name, model in models.items():
                outputs = model.test_step(batch)
                metrics[name].process(batch, [o.to_dict() if hasattr(o, 'to_dict') else o
                                              for o in outputs])
    out = {}
    logger = MMLogger.get_current_instance()
    level = logger.level
    if quiet:
        logger.setLevel(logging.WARNING)
    try:
        for name, metric in metrics.items():
            records = metric.pair_records(list(metric.results))
            out[name] = (dict(metric.evaluate(len(indices))), records)
    finally:
        logger.setLevel(level)
    return out


def evaluate(model, dataset, metric, batch_size=8, progress=True, indices=None, quiet=False):
    """``(metrics dict, per-pair records)`` of one model: :func:`evaluate_many` with one entry."""
    return evaluate_many({'model': model}, dataset, {'model': metric}, batch_size, progress,
                         indices, quiet=quiet)['model']


# ------------------------------------------------------------------------------- from a config
def pck_metric_cfg(cfg):
    """The first ``test_evaluator`` entry that is a ``PCKMetric`` dict (a copy)."""
    evaluator = cfg.get('test_evaluator')
    entries = evaluator if isinstance(evaluator, (list, tuple)) else [evaluator]
    if evaluator is not None and not isinstance(evaluator, (list, tuple)) \
            and 'metrics' in evaluator:
        entries = evaluator['metrics']
        entries = entries if isinstance(entries, (list, tuple)) else [entries]
    for entry in entries:
        if isinstance(entry, dict) and entry.get('type') in ('PCKMetric', 'mmengine.PCKMetric'):
            return copy.deepcopy(dict(entry))
    raise ValueError(
        f'the config\'s test_evaluator {evaluator!r} has no PCKMetric; offline evaluation '
        "reports PCK: set test_evaluator = dict(type='PCKMetric', presets=[...], alphas=(0.1, )).")


def build_dataset(cfg, pipeline=None):
    """The config's test dataset (optionally with another ``pipeline``), built in its scope."""
    from mmengine.registry import DATASETS, DefaultScope
    dataset_cfg = copy.deepcopy(cfg.test_dataloader.dataset)
    if pipeline is not None:
        dataset_cfg['pipeline'] = copy.deepcopy(pipeline)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope') or 'mmengine'):
        return DATASETS.build(dataset_cfg)


def build_metric(cfg, presets=None, dump_pairs=None):
    """A fresh ``PCKMetric`` of the config (``presets`` replaced when given), no log tables of
    another run, ``dump_pairs`` as given (None: no file)."""
    from mmengine.registry import METRICS, DefaultScope
    metric_cfg = pck_metric_cfg(cfg)
    metric_cfg['dump_pairs'] = dump_pairs
    if presets is not None:
        metric_cfg['presets'] = list(presets)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope') or 'mmengine'):
        return METRICS.build(metric_cfg)


def seed_like_runner(cfg):
    """Seed torch, numpy and random as the Runner does before it builds the model
    (``randomness.seed``; nothing when the config sets none)."""
    seed = (cfg.get('randomness') or {}).get('seed')
    if seed is not None:
        from mmengine.runner import set_random_seed
        set_random_seed(seed, deterministic=(cfg.get('randomness') or {}).get(
            'deterministic', False))


def build_model(cfg, model_cfg=None, device=None):
    """The config's model (or ``model_cfg``) built as the Runner builds it (seeded first), in
    eval mode on ``device`` (default: CUDA when available, as the Runner)."""
    from mmengine.registry import MODELS, DefaultScope
    seed_like_runner(cfg)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope') or 'mmengine'):
        model = MODELS.build(copy.deepcopy(model_cfg if model_cfg is not None else cfg.model))
    device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
    return model.to(device).eval()


def build_test_parts(cfg, presets=None, device=None):
    """``SimpleNamespace(model, dataset, metric, batch_size)`` of a config's test set: what
    ``tools/test.py`` would build (the metric without its ``dump_pairs`` file)."""
    return SimpleNamespace(model=build_model(cfg, device=device), dataset=build_dataset(cfg),
                           metric=build_metric(cfg, presets),
                           batch_size=int(cfg.test_dataloader.get('batch_size', 1)))
