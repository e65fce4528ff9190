"""Train a model from a config of any subtree (mmpretrain, mmseg, mmpose or plain mmengine scope).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
                          [--cfg-options KEY=VALUE ...] [--launcher none|pytorch|slurm]

Several processes: ``bash tools/dist_train.sh CONFIG GPUS [args]``. Without CUDA, distributed
runs use the gloo backend on CPU.

``--amp`` needs a GPU: mmengine's ``AmpOptimWrapper`` (float16 autocast with a dynamic loss
scale) runs on CUDA/NPU/MLU/MUSA devices only, so on a CPU-only machine the script stops with a
clear message rather than training in a precision the config was not tuned for.
"""
import argparse
import os.path as osp
import sys

if osp.dirname(osp.abspath(__file__)) not in sys.path:  # imported, not run as a script
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import _cli  # noqa: E402

_cli.make_repo_importable()
import common  # noqa: E402,F401  mmcv fallback, safe checkpoint loading, shared registries

PROG = 'tools/train.py'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog=PROG, description='Train a model from an OpenMMLab-style config.',
        epilog='Exit codes: 0 done, 1 a run-time error you can fix (checkpoint, model), '
        '2 a usage error (arguments, config file, config keys).')
    parser.add_argument('config', help='config file path')
    parser.add_argument(
        '--resume', nargs='?', const='auto', metavar='CKPT',
        help='resume training: alone, from the latest checkpoint in the work dir (starts from '
        'scratch when there is none); with CKPT, from that checkpoint file')
    parser.add_argument(
        '--amp', action='store_true',
        help='mixed-precision training: switches optim_wrapper to AmpOptimWrapper with a dynamic '
        'loss scale. Needs a GPU; on a CPU-only machine the script stops with an error.')
    _cli.add_common_args(parser)
    args = parser.parse_args(argv)
    _cli.set_local_rank(args)
    return args


def _accelerator_available():
    from mmengine.device import (is_cuda_available, is_mlu_available, is_musa_available,
                                 is_npu_available)
    return (is_cuda_available() or is_npu_available() or is_mlu_available()
            or is_musa_available())


def enable_amp(cfg):
    """Switch the config's optimizer wrapper to ``AmpOptimWrapper`` (dynamic loss scale)."""
    if not _accelerator_available():
        raise _cli.UsageError(
            '--amp needs a GPU: mixed precision uses mmengine\'s AmpOptimWrapper (float16 '
            'autocast with a dynamic loss scale), which runs on CUDA/NPU/MLU/MUSA devices only, '
            'and this machine has none. Drop --amp to train in float32 on the CPU.')
    optim_wrapper = cfg.get('optim_wrapper')
    if optim_wrapper is None:
        raise _cli.UsageError('--amp: the config has no optim_wrapper to switch to '
                              'AmpOptimWrapper.')
    current = optim_wrapper.get('type', 'OptimWrapper')
    if current not in ('OptimWrapper', 'AmpOptimWrapper'):
        raise _cli.UsageError(
            f'--amp only switches optim_wrapper.type OptimWrapper to AmpOptimWrapper, but this '
            f'config uses {current!r}; set the mixed-precision wrapper in the config instead.')
    optim_wrapper['type'] = 'AmpOptimWrapper'
    optim_wrapper.setdefault('loss_scale', 'dynamic')


def main(argv=None):
    args = parse_args(argv)
    cfg = _cli.load_config(args.config, args.cfg_options)
    _cli.set_work_dir(cfg, args.work_dir, args.config)
    if args.amp:
        enable_amp(cfg)
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        _cli.check_local_file(args.resume, '--resume checkpoint')
        cfg.resume = True
        cfg.load_from = args.resume
    _cli.prepare_launcher(cfg, args.launcher)
    runner = _cli.build_runner(cfg)
    runner.train()


def cli(argv=None):
    """Run the command line; returns the exit code instead of raising for user errors."""
    return _cli.run_cli(PROG, main, argv)


if __name__ == '__main__':
    sys.exit(cli())
