r"""Collect one UNet block's features of an unlabeled image folder as SAE training tokens.

    python tools/collect_sae_features.py CONFIG --out DIR [--images DIR] [--num-images N]
        [--shard-size 256] [--dtype float16|float32] [--batch-size 8] [--device cuda]
        [--launcher none|pytorch] [--cfg-options KEY=VALUE ...]
    torchrun --nproc_per_node 4 tools/collect_sae_features.py CONFIG --out DIR --launcher pytorch

CONFIG holds ``teacher``: a ``DiffusionTeacher`` with ONE layer (the module path of the block),
ONE timestep and a ``seed`` (ddpm-segmentation's shared fixed noise), and ``sae_features =
dict(image_root=..., size=256, block=6, extensions=(...), num_images=None, seed=0)``. ``block``
(optional): guided-diffusion's ``output_blocks`` index; the teacher's layer is then the module
path of that block in the converted UNet (``segmentation/pixel_features/adm_blocks.py``). Every square image is resized to ``size``, scaled to [-1, 1], noised
to the timestep and the block's ``[C, h, w]`` output stored at its native resolution (ADM block 6
on 256 px: 512 x 32 x 32 = 1024 tokens per image) in checksummed safetensors shards
(``common/io/feature_shards.py`` describes the layout; ``segmentation/sae/collect.py`` reads them
as ``[h * w, C]`` tokens).

Resumable: a re-run with the same settings skips images already in complete shards; one with
other settings into the same --out is refused, naming the setting. With ``--launcher pytorch``
rank r takes images i with i % world_size == r and writes under DIR/rank{r:03d}/.
"""
import os
import sys

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:  # imported, not run as a script
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _cli  # noqa: E402

_cli.make_repo_importable()

PROG = 'tools/collect_sae_features.py'
SECTION_KEYS = ('image_root', 'size', 'extensions', 'num_images', 'seed', 'block')


def parse_args(argv=None):
    parser = _cli.ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0],
                                 epilog='See the top of this file for the details.')
    parser.add_argument('config', help='config with teacher (one layer, one timestep, a seed) '
                        'and sae_features')
    parser.add_argument('--out', required=True, metavar='DIR', help='the shard folder')
    parser.add_argument('--images', metavar='DIR',
                        help='image root (default: the config\'s sae_features.image_root)')
    parser.add_argument('--num-images', type=int, metavar='N',
                        help='a seeded random subset of N images (default: all)')
    parser.add_argument('--shard-size', type=int, default=256, metavar='N',
                        help='images per shard (default 256)')
    parser.add_argument('--dtype', choices=['float16', 'float32'], default='float16',
                        help='stored feature dtype (default float16)')
    parser.add_argument('--batch-size', type=int, default=8, metavar='N',
                        help='images per teacher call (default 8)')
    parser.add_argument('--device', help='cpu or cuda (default: cuda when available; with '
                        '--launcher pytorch, cuda:LOCAL_RANK)')
    parser.add_argument('--launcher', choices=['none', 'pytorch'], default='none',
                        help='none (one process) or pytorch (torchrun; gloo without CUDA)')
    _cli.add_cfg_options_arg(parser)
    args = parser.parse_args(argv)
    _cli.check_at_least_one(parser, args, ('shard_size', 'batch_size', 'num_images'))
    return args


def section(cfg, args):
    """The ``sae_features`` section, checked, with defaults."""
    sec = dict(cfg.get('sae_features') or {})
    unknown = sorted(set(sec) - set(SECTION_KEYS))
    if unknown:
        raise _cli.UsageError(
            f'sae_features has unknown key(s) {unknown}; expected some of {list(SECTION_KEYS)}. '
            f'Fix the spelling in the config.')
    if cfg.get('teacher') is None:
        raise _cli.UsageError(
            "The config has no `teacher`: expected dict(type='DiffusionTeacher', pretrained=..., "
            'layers=[BLOCK_PATH], timesteps=[T], seed=0).')
    sec.setdefault('size', 256)
    sec.setdefault('seed', 0)
    sec['image_root'] = args.images or sec.get('image_root')
    if args.num_images is not None:
        sec['num_images'] = args.num_images
    if not sec['image_root']:
        raise _cli.UsageError('No image folder: set sae_features.image_root in the config or '
                              'pass --images DIR.')
    return sec


def main(argv=None):
    # data errors: one paragraph with the fix, exit 1
    return _cli.run_reporting(run, parse_args(argv), [
        'segmentation.sae.collect:SAEFeatureError',
    ])


def run(args):
    cfg = _cli.load_config(args.config, args.cfg_options)
    sec = section(cfg, args)

    from mmengine.registry import MODELS

    from common.io import feature_shards as fs
    from segmentation.sae import collect

    rank, world_size, device, barrier = _cli.shard_worker(args.launcher, args.device)

    keys = fs.list_images(sec['image_root'], sec.get('extensions') or fs.IMAGE_EXTENSIONS,
                          sec.get('num_images'), sec['seed'], kind=collect.KIND)
    teacher_cfg = cfg.teacher
    if sec.get('block') is not None:
        layer = collect.adm_block_layer(cfg.teacher.pretrained, sec['block'])
        given = cfg.teacher.get('layers')
        if given and list(given) != [layer]:
            raise _cli.UsageError(
                f'sae_features.block={sec["block"]} is {layer!r} in this UNet, but teacher.layers '
                f'is {list(given)}: give one of the two (drop teacher.layers to use the block).')
        teacher_cfg = dict(cfg.teacher, layers=[layer])
    with _cli.config_scope(cfg):
        teacher = MODELS.build(teacher_cfg).to(device).eval()
    layer, t = collect.check_teacher(teacher)
    print(f'{PROG}: rank {rank}/{world_size}: {len(keys[rank::world_size])} of {len(keys)} '
          f'images, {layer} at t={t} -> {os.path.join(args.out, f"rank{rank:03d}")}', flush=True)
    writer = collect.collect_sae_features(
        teacher, sec['image_root'], args.out, size=sec['size'], teacher_cfg=teacher_cfg,
        keys=keys, rank=rank, world_size=world_size, shard_size=args.shard_size,
        dtype=args.dtype, batch_size=args.batch_size,
        barrier=barrier, show_progress=rank == 0)
    print(f'{PROG}: rank {rank}: {len(writer.written)} new shard(s), {len(writer.done)} images '
          f'in complete shards' + (f'; manifest {os.path.join(args.out, fs.MANIFEST)}'
                                   if rank == 0 else ''), flush=True)
    _cli.close_distributed()


if __name__ == '__main__':
    sys.exit(_cli.run_cli(PROG, main))
