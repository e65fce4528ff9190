"""Sample a teacher's DMD pairs (noise latent, class id, EDM image) into a resumable shard folder.

    python tools/build_dmd_pairs.py CONFIG --out DIR [--per-class N] [--batch-size N]
        [--shard-size N] [--launcher none|pytorch] [--cfg-options KEY=VALUE ...]

CONFIG holds ``teacher`` (a MODELS config: ``dict(type='load_edm', folder=...)`` or
``dict(type='DiffusersDenoiser', pretrained=...)``) and ``pairs = dict(num_classes, per_class,
image_shape, num_steps=18, base_seed=0)``. The one rule: a killed run is continued by running
the same command again (complete shards are kept); a run with other settings into the same
--out is refused. With ``--launcher pytorch`` (torchrun) every rank writes its share and rank 0
writes the manifest. Read the folder with ``generation_dmd.pairs.DMDPairDataset``.

The arguments are parsed before torch, mmengine or ``common`` is imported, so ``--help`` and
argument errors answer at once.
"""
import os.path as osp
import sys

if osp.dirname(osp.abspath(__file__)) not in sys.path:  # imported, not run as a script
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import _cli  # noqa: E402

_cli.make_repo_importable()

PROG = 'tools/build_dmd_pairs.py'


def _positive(text):
    import argparse
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f'expected a positive integer, got {text!r}')
    return value


def parse_args(argv=None):
    parser = _cli.ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='config file with `teacher` and `pairs`')
    parser.add_argument('--out', required=True, metavar='DIR', help='output shard folder')
    parser.add_argument('--per-class', type=_positive, metavar='N',
                        help='pairs per class (overrides pairs.per_class)')
    parser.add_argument('--batch-size', type=_positive, default=64, metavar='N',
                        help='latents sampled together (default 64)')
    parser.add_argument('--shard-size', type=_positive, default=1024, metavar='N',
                        help='pairs per shard file (default 1024)')
    parser.add_argument('--launcher', choices=['none', 'pytorch'], default='none',
                        help='none (one process) or pytorch (torchrun: one rank per process)')
    _cli.add_cfg_options_arg(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = _cli.load_config(args.config, args.cfg_options)
    for name in ('teacher', 'pairs'):
        if not _cli.is_mapping(cfg.get(name)):
            raise _cli.UsageError(
                f'{args.config}: expected a `{name}` dict in the config (teacher=dict(type='
                f"'load_edm', folder=...), pairs=dict(num_classes=10, per_class=10000, "
                f'image_shape=(3, 32, 32))), but it has {cfg.get(name)!r}. Add it.')
    pairs = dict(cfg.pairs)
    if args.per_class is not None:
        pairs['per_class'] = args.per_class
    allowed = {'num_classes', 'per_class', 'image_shape', 'num_steps', 'base_seed'}
    missing = {'num_classes', 'per_class', 'image_shape'} - set(pairs)
    unknown = set(pairs) - allowed
    if missing or unknown:
        raise _cli.UsageError(
            f'{args.config}: pairs has unknown keys {sorted(unknown)} and lacks {sorted(missing)};'
            f' expected pairs=dict(num_classes, per_class, image_shape, num_steps=18, '
            f'base_seed=0). Fix the pairs dict.')
    import generation_dmd
    from mmengine.registry import MODELS
    from generation_dmd.pairs import build_pairs
    assert generation_dmd.load_edm  # importing the package registers the teachers in MODELS
    rank, world_size, device, barrier = _cli.shard_worker(args.launcher)
    from generation_dmd.networks import EDMLoadError
    from generation_dmd.pairs import DMDPairError
    teacher_cfg = cfg.teacher.to_dict() if hasattr(cfg.teacher, 'to_dict') else dict(cfg.teacher)
    try:  # the package's own errors are one-paragraph messages for the user: exit code 1
        teacher = MODELS.build(dict(teacher_cfg)).to(device).eval()
        writer = build_pairs(teacher, args.out, batch_size=args.batch_size, rank=rank,
                             world_size=world_size, shard_size=args.shard_size, device=device,
                             barrier=barrier, teacher_info=teacher_cfg,
                             show_progress=rank == 0, **pairs)
    except (DMDPairError, EDMLoadError) as err:
        raise _cli.RunError(str(err)) from err
    if rank == 0:
        print(f'{len(writer.written)} shard(s) written by this run; pairs in {args.out}')


if __name__ == '__main__':
    sys.exit(_cli.run_cli(PROG, main))
