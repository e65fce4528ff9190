"""Evaluate a checkpoint on the test set of a config of any subtree.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--cfg-options KEY=VALUE ...]
                         [--show-dir DIR] [--out FILE] [--launcher none|pytorch|slurm]

Several processes: ``bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [args]``. The checkpoint is
loaded through the safe loader of ``common.io`` (no pickled code runs). The metrics are logged
and printed as the last line (``Test metrics: {...}``).

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
        prog=PROG, description='Evaluate a checkpoint with the test loop of a config.',
        epilog='Exit codes: 0 done, 1 a run-time error you can fix (checkpoint, model), '
        '2 a usage error (arguments, config file, config keys).')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='checkpoint file (local path or URL)')
    parser.add_argument(
        '--show-dir', metavar='DIR',
        help='save drawn predictions into DIR: turns on the config\'s visualization hook '
        '(default_hooks.visualization); the config must have one')
    parser.add_argument('--show-interval', type=int, default=1, metavar='N',
                        help='with --show-dir, draw every N-th test sample (default 1)')
    parser.add_argument(
        '--out', metavar='FILE',
        help='FILE.json: write the metrics as JSON; FILE.pkl/.pickle: dump the raw predictions '
        '(mmengine DumpResults)')
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


def add_output(cfg, out):
    """``--out``: metrics as JSON (written after the run) or predictions via DumpResults."""
    if out is None or out.endswith('.json'):
        return
    if not out.endswith(PICKLE_SUFFIXES):
        raise _cli.UsageError(f'--out {out!r}: use a .json file (metrics) or a .pkl/.pickle '
                              f'file (raw predictions).')
    dump = dict(type='DumpResults', out_file_path=out)
    evaluator = cfg.get('test_evaluator')
    if evaluator is None:
        cfg.test_evaluator = [dump]
    elif isinstance(evaluator, (list, tuple)):
        cfg.test_evaluator = list(evaluator) + [dump]
    elif 'metrics' in evaluator:  # an Evaluator dict: dict(type=..., metrics=[...])
        metrics = evaluator['metrics']
        evaluator['metrics'] = (list(metrics) if isinstance(metrics, (list, tuple))
                                else [metrics]) + [dump]
    else:
        cfg.test_evaluator = [evaluator, dump]


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
    _cli.check_local_file(args.checkpoint, 'Checkpoint')
    cfg.load_from = args.checkpoint
    cfg.resume = False
    if args.show_dir is not None:
        enable_visualization(cfg, args.show_dir, args.show_interval)
    add_output(cfg, args.out)
    _cli.prepare_launcher(cfg, args.launcher)
    runner = _cli.build_runner(cfg)
    metrics = _plain(dict(runner.test()))
    if runner.rank == 0:
        if args.out is not None and args.out.endswith('.json'):
            from common.io import atomic_write_bytes
            atomic_write_bytes(args.out, json.dumps(metrics, indent=2).encode() + b'\n')
        print(f'Test metrics: {json.dumps(metrics)}', flush=True)
    return metrics


def cli(argv=None):
    """Run the command line; returns the exit code instead of raising for user errors."""
    return _cli.run_cli(PROG, main, argv)


if __name__ == '__main__':
    sys.exit(cli())
