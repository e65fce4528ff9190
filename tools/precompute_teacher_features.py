r"""Precompute a correspondence teacher's features of a large image set into shards.

    python tools/precompute_teacher_features.py CONFIG --out DIR [--images DIR]
        [--shard-size 256] [--dtype float16|float32] [--batch-size 1] [--device cuda]
        [--launcher none|pytorch] [--cfg-options KEY=VALUE ...]
    torchrun --nproc_per_node 4 tools/precompute_teacher_features.py CONFIG --out DIR \
        --launcher pytorch

CONFIG holds ``teacher`` (any correspondence extractor config), optionally ``embedder`` (a
registered module mapping ``[B, 3, H, W]`` in ``[0, 1]`` to ``[B, D]``, e.g.
``DINOv2ClsEmbedder``: the embeddings pair images by retrieval) and ``precompute = dict(
image_root=..., size=(434, 434), frame='stretched', resample='bilinear', extensions=(...),
num_images=None, seed=0, categories=None)``. Each image (every file with one of the extensions
under image_root, or a seeded subset of num_images) is drawn into the frame exactly as the pair
pipeline's ``ResizePair`` draws it, and its features are stored under its path relative to
image_root (``correspondence/datasets/teacher_shards.py`` describes the layout).

Resumable: a re-run with the same settings skips images already in complete shards; a re-run with
other settings into the same --out is refused, naming the setting. With ``--launcher pytorch``
rank r takes images i with i % world_size == r and writes under DIR/rank{r:03d}/; rank 0 writes
DIR/manifest.json after all ranks have finished. A corrupt shard: delete it (and its .json) and
run the same command again; only its images are recomputed.

The training dataset reads the folder with ``UnlabeledPairsDataset(shards=DIR)`` and the pipeline
step ``LoadTeacherFeatures(shards=DIR)``.
"""
import os
import sys

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:  # imported, not run as a script
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _cli  # noqa: E402

_cli.make_repo_importable()

PROG = 'tools/precompute_teacher_features.py'
PRECOMPUTE_KEYS = ('image_root', 'size', 'frame', 'resample', 'extensions', 'num_images', 'seed',
                   'categories')


def parse_args(argv=None):
    parser = _cli.ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0],
                                 epilog='See the top of this file for the details.')
    parser.add_argument('config', help='config with teacher, optional embedder, and precompute')
    parser.add_argument('--out', required=True, metavar='DIR', help='the shard folder')
    parser.add_argument('--images', metavar='DIR',
                        help='image root (default: the config\'s precompute.image_root)')
    parser.add_argument('--shard-size', type=int, default=256, metavar='N',
                        help='images per shard (default 256)')
    parser.add_argument('--dtype', choices=['float16', 'float32'], default='float16',
                        help='stored feature dtype (default float16)')
    parser.add_argument('--batch-size', type=int, default=1, metavar='N',
                        help='images per teacher call (default 1)')
    parser.add_argument('--device', help='cpu or cuda (default: cuda when available; with '
                        '--launcher pytorch, cuda:LOCAL_RANK)')
    parser.add_argument('--launcher', choices=['none', 'pytorch'], default='none',
                        help='none (one process) or pytorch (torchrun; gloo without CUDA)')
    _cli.add_cfg_options_arg(parser)
    args = parser.parse_args(argv)
    for name in ('shard_size', 'batch_size'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be at least 1, '
                         f'got {getattr(args, name)}')
    return args


def precompute_settings(cfg, image_root):
    """The ``precompute`` section, checked, with defaults."""
    pre = dict(cfg.get('precompute') or {})
    unknown = sorted(set(pre) - set(PRECOMPUTE_KEYS))
    if unknown:
        raise _cli.UsageError(
            f'precompute has unknown key(s) {unknown}; expected some of {list(PRECOMPUTE_KEYS)}. '
            f'Fix the spelling in the config.')
    if cfg.get('teacher') is None:
        raise _cli.UsageError(
            'The config has no `teacher`: expected a correspondence extractor config (e.g. '
            "dict(type='FusedExtractor', extractors=[...])) whose features are precomputed.")
    pre.setdefault('frame', 'stretched')
    pre.setdefault('size', (434, 434))
    pre.setdefault('resample', 'bilinear')
    pre.setdefault('seed', 0)
    pre['image_root'] = image_root or pre.get('image_root')
    if not pre['image_root']:
        raise _cli.UsageError('No image root: set precompute.image_root in the config or pass '
                              '--images DIR.')
    size = pre['size']
    pre['size'] = None if size is None else (
        int(size) if isinstance(size, (int, float)) else [int(s) for s in size])
    return pre


def main(argv=None):
    # data errors: one paragraph with the fix, exit 1
    return _cli.run_reporting(run, parse_args(argv), [
        'correspondence.datasets.base:CorrespondenceDataError',
    ])


def run(args):
    cfg = _cli.load_config(args.config, args.cfg_options)
    pre = precompute_settings(cfg, args.images)

    from mmengine.registry import MODELS

    import importlib
    from correspondence.datasets import teacher_shards as ts
    # registrations: the extractors, DINOv2ClsEmbedder
    for name in ('correspondence', 'correspondence.datasets.unlabeled'):
        importlib.import_module(name)

    rank, world_size, device, barrier = _cli.shard_worker(args.launcher, args.device)

    keys = ts.list_images(pre['image_root'], pre.get('extensions') or ts.IMAGE_EXTENSIONS,
                          pre.get('num_images'), pre['seed'])
    settings = dict(teacher=ts.config_digest(cfg.teacher),
                    embedder=ts.config_digest(cfg.get('embedder')),
                    frame=pre['frame'], size=pre['size'], resample=pre['resample'],
                    categories=pre.get('categories'))
    # check before loading large models: a wrong --out answers at once
    ts.check_settings(os.path.abspath(args.out),
                      dict(settings, images=ts.list_digest(keys), num_images=len(keys),
                           world_size=world_size, dtype=args.dtype))
    with _cli.config_scope(cfg):
        teacher = MODELS.build(cfg.teacher).to(device).eval()
        embedder = MODELS.build(cfg.embedder).to(device).eval() if cfg.get('embedder') else None
    compute = ts.make_compute(teacher, pre['image_root'], pre['frame'], pre['size'], embedder,
                              pre['resample'], device, pre.get('categories'))
    print(f'{PROG}: rank {rank}/{world_size}: {len(keys[rank::world_size])} of {len(keys)} '
          f'images -> {os.path.join(args.out, f"rank{rank:03d}")}', flush=True)
    writer = ts.write_shards(
        args.out, keys, compute, settings, rank=rank, world_size=world_size,
        shard_size=args.shard_size, dtype=args.dtype, batch_size=args.batch_size,
        barrier=barrier,
        info=dict(image_root=os.path.abspath(os.path.expanduser(pre['image_root'])),
                  config=os.path.abspath(args.config)),
        show_progress=rank == 0)
    print(f'{PROG}: rank {rank}: {len(writer.written)} new shard(s), {len(writer.done)} images '
          f'in complete shards' + (f'; manifest {os.path.join(args.out, ts.MANIFEST)}'
                                   if rank == 0 else ''), flush=True)
    _cli.close_distributed()


if __name__ == '__main__':
    sys.exit(_cli.run_cli(PROG, main))
