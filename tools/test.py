"""Evaluate a checkpoint (or a model as configured, zero-shot) on the test set of a config.

    python tools/test.py CONFIG [CHECKPOINT] [--work-dir DIR] [--cfg-options KEY=VALUE ...]
                         [--show-dir DIR] [--out FILE] [--launcher none|pytorch|slurm]

Several processes: ``bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [args]``. The checkpoint is
loaded through the safe loader of ``common.io`` (no pickled code runs). Without CHECKPOINT the
model is evaluated as the config builds it (its pretrained parts, e.g. a frozen feature
extractor: the zero-shot evaluation of ``correspondence/``), or from the config's own
``load_from`` if it sets one; a log line says which. The metrics are logged and printed as the
last line (``Test metrics: {...}``).

``--out FILE.json`` writes the metrics as JSON; when the test evaluator has a metric that dumps
per-pair records (``PCKMetric``: it has ``write_pairs``/``dump_pairs``), the file is instead that
metric's per-pair dump (``alphas``, ``protocols``, ``pairs``) with the metrics added under
``"metrics"``, so every printed number can be recomputed from it.

The arguments are parsed before torch, mmengine or ``common`` is imported, so ``--help`` and
argument errors answer at once.
"""
import json
import os.path as osp
import sys

if osp.dirname(osp.abspath(__file__)) not in sys.path:  # imported, not run as a script
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import _cli  # noqa: E402

_cli.make_repo_importable()  # `common` is imported by _cli.load_config, after the arguments

PROG = 'tools/test.py'
PICKLE_SUFFIXES = ('.pkl', '.pickle')


def parse_args(argv=None):
    parser = _cli.ArgumentParser(
        prog=PROG, description='Evaluate a checkpoint (or, without one, the model as the config '
        'builds it: zero-shot) with the test loop of a config.',
        epilog='Exit codes: 0 done, 1 a run-time error you can fix (checkpoint, model), '
        '2 a usage error (arguments, config file, config keys).')
    parser.add_argument('config', help='config file path')
    parser.add_argument(
        'checkpoint', nargs='?', default=None,
        help='checkpoint file (local path or URL); optional: without it the model is evaluated '
        'as the config builds it (zero-shot, e.g. a pretrained feature extractor), or from the '
        'config\'s load_from when it sets one')
    parser.add_argument(
        '--show-dir', metavar='DIR',
        help='save drawn predictions into DIR: turns on the config\'s visualization hook '
        '(default_hooks.visualization); the config must have one')
    parser.add_argument('--show-interval', type=int, default=1, metavar='N',
                        help='with --show-dir, draw every N-th test sample (default 1)')
    parser.add_argument(
        '--out', metavar='FILE',
        help='FILE.json: write the metrics as JSON; but when the test evaluator has a metric '
        'with a per-pair dump (dump_pairs/write_pairs, e.g. PCKMetric), FILE.json is that dump '
        '({"alphas", "protocols", "pairs": [...]}) with the metrics added under "metrics" '
        '(the config\'s own dump_pairs path is replaced). FILE.pkl/.pickle: dump the raw '
        'predictions (mmengine DumpResults)')
    _cli.add_common_args(parser)
    args = parser.parse_args(argv)
    _cli.set_local_rank(args)
    return args


def enable_visualization(cfg, show_dir, interval=1):
    """Turn on ``default_hooks.visualization`` and point its output at ``show_dir``.

    The hooks differ by subtree, so the keys are chosen by what the hook's ``__init__`` takes:
    mmpretrain's ``VisualizationHook`` and mmpose's ``PoseVisualizationHook`` take ``enable`` and
    ``out_dir``; mmseg's ``SegVisualizationHook`` takes ``draw`` and writes through the
    visualizer, whose ``save_dir`` is set instead.
    """
    from mmengine.registry import HOOKS
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        raise _cli.UsageError(
            '--show-dir needs a visualization hook, but the config has no '
            'default_hooks.visualization; add one (e.g. VisualizationHook for mmpretrain, '
            'SegVisualizationHook for mmseg, PoseVisualizationHook for mmpose) or drop '
            '--show-dir.')
    hook_cls = _cli.resolve_type(HOOKS, hook.get('type'), cfg.get('default_scope'))
    if hook_cls is None:
        raise _cli.UsageError(f'--show-dir: the visualization hook type {hook.get("type")!r} '
                              f'is not registered in scope {cfg.get("default_scope")!r}.')
    params = _cli.init_signature_params(hook_cls)
    switches = [name for name in ('enable', 'draw') if name in params]
    if not switches:
        raise _cli.UsageError(f'--show-dir: {hook_cls.__name__} has neither an `enable` nor a '
                              f'`draw` argument, so this script cannot turn it on.')
    show_dir = osp.abspath(show_dir)  # hooks join relative dirs under work_dir/<timestamp>
    for name in switches:
        hook[name] = True
    if 'interval' in params:
        hook['interval'] = interval
    if 'out_dir' in params:
        hook['out_dir'] = show_dir
    elif cfg.get('visualizer') is not None:
        cfg.visualizer['save_dir'] = show_dir
    else:
        raise _cli.UsageError(f'--show-dir: {hook_cls.__name__} saves through the visualizer, '
                              f'but the config has no `visualizer` to set save_dir on.')


def _test_metric_cfgs(cfg):
    """The metric dicts of ``test_evaluator`` (a dict, a list, or an Evaluator dict with
    ``metrics``), as the config holds them (editing one edits the config)."""
    evaluator = cfg.get('test_evaluator')
    if evaluator is None:
        return []
    if isinstance(evaluator, (list, tuple)):
        return list(evaluator)
    if 'metrics' in evaluator:
        metrics = evaluator['metrics']
        return list(metrics) if isinstance(metrics, (list, tuple)) else [metrics]
    return [evaluator]


def pair_dump_metric(cfg):
    """The first test metric whose class writes per-pair records (``write_pairs`` and a
    ``dump_pairs`` argument, e.g. ``PCKMetric``), or None."""
    from mmengine.registry import METRICS
    for metric in _test_metric_cfgs(cfg):
        if not _cli.is_mapping(metric):
            continue
        metric_cls = _cli.resolve_type(METRICS, metric.get('type'), cfg.get('default_scope'))
        if (metric_cls is not None and hasattr(metric_cls, 'write_pairs')
                and 'dump_pairs' in _cli.init_signature_params(metric_cls)):
            return metric
    return None


def add_output(cfg, out):
    """``--out``: metrics as JSON (written after the run) or predictions via DumpResults.

    Returns True when FILE.json is a per-pair dump: the first pair-dumping metric's
    ``dump_pairs`` is pointed at ``out`` and :func:`main` adds the metrics to it afterwards.
    """
    if out is None:
        return False
    if out.endswith('.json'):
        metric = pair_dump_metric(cfg)
        if metric is None:
            return False
        metric['dump_pairs'] = osp.abspath(out)
        return True
    if not out.endswith(PICKLE_SUFFIXES):
        raise _cli.UsageError(f'--out {out!r}: use a .json file (metrics) or a .pkl/.pickle '
                              f'file (raw predictions).')
    metrics = _test_metric_cfgs(cfg) + [dict(type='DumpResults', out_file_path=out)]
    evaluator = cfg.get('test_evaluator')
    if _cli.is_mapping(evaluator) and 'metrics' in evaluator:  # an Evaluator dict: keep it
        evaluator['metrics'] = metrics
    else:
        cfg.test_evaluator = metrics
    return False


def write_json_out(out, metrics, pair_dump):
    """Write ``--out FILE.json``: the metrics, or the metric's per-pair dump plus ``metrics``."""
    from common.io import atomic_write_bytes
    payload = metrics
    if pair_dump:
        if not osp.isfile(out):
            raise _cli.RunError(f'--out {out!r}: the per-pair dump the test metric should have '
                                'written there is missing (did the test set have no sample?).')
        with open(out, encoding='utf-8') as f:
            payload = json.load(f)
        payload['metrics'] = metrics
    atomic_write_bytes(out, json.dumps(payload, indent=1 if pair_dump else 2).encode() + b'\n')


ZERO_SHOT = ('{prog}: no CHECKPOINT given: the model is evaluated as configured (zero-shot: '
             'weights from its own initialisation and pretrained parts, no checkpoint loaded).')
CONFIG_LOAD_FROM = ('{prog}: no CHECKPOINT given: evaluating the weights of the config\'s '
                    'load_from = {load_from!r}.')


def _plain(value):
    """JSON-friendly version of a metric value (tensors and numpy scalars become floats)."""
    if hasattr(value, 'tolist'):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def main(argv=None):
    args = parse_args(argv)
    cfg = _cli.load_config(args.config, args.cfg_options)
    _cli.set_work_dir(cfg, args.work_dir, args.config)
    if args.checkpoint is not None:
        _cli.check_local_file(args.checkpoint, 'Checkpoint')
        cfg.load_from = args.checkpoint
        origin = None
    elif cfg.get('load_from'):
        _cli.check_local_file(cfg.load_from, "The config's load_from")
        origin = CONFIG_LOAD_FROM.format(prog=PROG, load_from=cfg.load_from)
    else:
        cfg.load_from = None
        origin = ZERO_SHOT.format(prog=PROG)
    cfg.resume = False
    if args.show_dir is not None:
        enable_visualization(cfg, args.show_dir, args.show_interval)
    pair_dump = add_output(cfg, args.out)
    _cli.prepare_launcher(cfg, args.launcher)
    runner = _cli.build_runner(cfg)
    if origin is not None:
        from mmengine.logging import print_log
        print_log(origin, logger='current')
    metrics = _plain(dict(runner.test()))
    if runner.rank == 0:
        if args.out is not None and args.out.endswith('.json'):
            write_json_out(args.out, metrics, pair_dump)
        print(f'Test metrics: {json.dumps(metrics)}', flush=True)
    _cli.close_distributed()
    return metrics


def cli(argv=None):
    """Run the command line; returns the exit code instead of raising for user errors."""
    return _cli.run_cli(PROG, main, argv)


if __name__ == '__main__':
    sys.exit(cli())
