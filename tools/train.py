"""Train a model from a config of any subtree (mmpretrain, mmseg, mmpose or plain mmengine scope).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--auto-scale-lr]
                          [--cfg-options KEY=VALUE ...] [--launcher none|pytorch|slurm]

Several processes: ``bash tools/dist_train.sh CONFIG GPUS [args]``. Without CUDA, distributed
runs use the gloo backend on CPU.

``--amp`` needs a GPU: mmengine's ``AmpOptimWrapper`` (float16 autocast with a dynamic loss
scale) runs on CUDA/NPU/MLU/MUSA devices only, so on a CPU-only machine the script stops with a
clear message rather than training in a precision the config was not tuned for.

``--auto-scale-lr`` applies the linear scaling rule as OpenMMLab's tools do: it sets
``auto_scale_lr.enable=True`` and mmengine's Runner multiplies the lr of every parameter group by
(processes x ``train_dataloader.batch_size``) / ``auto_scale_lr.base_batch_size`` before the
parameter schedulers are built. The config names the total batch its lr is for
(``auto_scale_lr = dict(base_batch_size=128)`` for a ``2xb64`` experiment).

The arguments are parsed before torch, mmengine or ``common`` is imported, so ``--help`` and
argument errors answer at once.
"""
import os.path as osp
import sys

if osp.dirname(osp.abspath(__file__)) not in sys.path:  # imported, not run as a script
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import _cli  # noqa: E402

_cli.make_repo_importable()  # `common` is imported by _cli.load_config, after the arguments

PROG = 'tools/train.py'


def parse_args(argv=None):
    parser = _cli.ArgumentParser(
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
    parser.add_argument(
        '--auto-scale-lr', action='store_true',
        help='scale the lr linearly with the total batch size: the Runner multiplies it by '
        '(processes x train_dataloader.batch_size) / auto_scale_lr.base_batch_size. The config '
        'must set auto_scale_lr.base_batch_size, the total batch its lr was tuned for.')
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


def enable_auto_scale_lr(cfg):
    """``--auto-scale-lr``: turn on mmengine's linear lr scaling (``auto_scale_lr.enable``)."""
    auto_scale_lr = cfg.get('auto_scale_lr')
    is_dict = _cli.is_mapping(auto_scale_lr)
    base = auto_scale_lr.get('base_batch_size') if is_dict else None
    if not (isinstance(base, int) and not isinstance(base, bool) and base > 0):
        found = ('the config has no auto_scale_lr' if auto_scale_lr is None else
                 f'the config has auto_scale_lr='
                 f'{dict(auto_scale_lr) if is_dict else auto_scale_lr!r}')
        raise _cli.UsageError(
            f'--auto-scale-lr needs auto_scale_lr.base_batch_size, the total batch size (all '
            f'processes) the config\'s lr was tuned for, as a positive integer; {found}. Add '
            f'e.g. auto_scale_lr = dict(base_batch_size=128) to the config (128 for a 2xb64 '
            f'experiment) or pass --cfg-options auto_scale_lr.base_batch_size=128.')
    auto_scale_lr['enable'] = True


def main(argv=None):
    args = parse_args(argv)
    cfg = _cli.load_config(args.config, args.cfg_options)
    _cli.set_work_dir(cfg, args.work_dir, args.config)
    if args.amp:
        enable_amp(cfg)
    if args.auto_scale_lr:
        enable_auto_scale_lr(cfg)
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        _cli.check_local_file(args.resume, '--resume checkpoint')
        cfg.resume = True
        cfg.load_from = args.resume
    _cli.prepare_launcher(cfg, args.launcher)
    # The config is final from here on (flags applied, launcher set): start-up checks and
    # warnings about it belong here, before the Runner is built.
    from common.teachers.cache_checks import warn_if_cache_never_hits
    warn_if_cache_never_hits(cfg)
    runner = _cli.build_runner(cfg)
    runner.train()
    _cli.close_distributed()


def cli(argv=None):
    """Run the command line; returns the exit code instead of raising for user errors."""
    return _cli.run_cli(PROG, main, argv)


if __name__ == '__main__':
    sys.exit(cli())
