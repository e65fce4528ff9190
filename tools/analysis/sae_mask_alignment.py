r"""Which SAE latents fire on which ground-truth classes: the latent-to-class table and figures.

    python tools/analysis/sae_mask_alignment.py CONFIG SAE_CHECKPOINT --data DIR --num-classes N
        [--class-names a b ...] [--ignore-index 255] [--size 256] [--num-images N]
        [--tau 0] [--dense-fraction 0.2] [--top-k 3] [--figures 4] [--batch-size 4]
        [--device cpu] [--out DIR] [--cfg-options KEY=VALUE ...]

CONFIG holds ``teacher`` (the ``DiffusionTeacher`` the SAE's tokens were collected with: one
layer, one timestep, a ``seed``) and ``sae`` (the SAE's model config, e.g.
``dict(type='TopKSAE', d_in=512, d_sae=4096, k=32)``); SAE_CHECKPOINT is a ``save_sae``
safetensors file. --data is a ddpm-segmentation labelled folder (square images + same-stem
``.npy`` masks). Each latent's map ``h_j > tau`` (bilinearly upsampled to the mask size) is
compared with each class mask, counts summed over the dataset (``segmentation/sae/alignment.py``:
IoU with a real union, recall, precision, F1, and the seed's Dice/2 as ``legacy_dice_half``); the
best latent per class is ranked by IoU with dense latents (active on more than --dense-fraction of
the pixels) excluded. Written to --out (default ``work_dirs/sae_mask_alignment``):
``alignment.json``, ``alignment.md`` and, with --figures K > 0, one png per class showing its
top latents over K images.
"""
import os.path as osp
import sys

_TOOLS = osp.dirname(osp.dirname(osp.abspath(__file__)))
if _TOOLS not in sys.path:  # run as a script: first; imported (tests): last, shadowing nothing
    sys.path.insert(0 if __name__ == '__main__' else len(sys.path), _TOOLS)
import _cli  # noqa: E402

_cli.make_repo_importable()

PROG = 'tools/analysis/sae_mask_alignment.py'


def parse_args(argv=None):
    parser = _cli.ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0],
                                 epilog='See the top of this file for the details.')
    parser.add_argument('config', help='config with teacher and sae')
    parser.add_argument('checkpoint', help='the SAE (.safetensors written by save_sae)')
    parser.add_argument('--data', required=True, metavar='DIR', help='labelled folder')
    parser.add_argument('--num-classes', type=int, required=True, metavar='N',
                        help='class ids 0..N-1 in the masks')
    parser.add_argument('--class-names', nargs='+', metavar='NAME',
                        help='one name per class id (default: the ids)')
    parser.add_argument('--ignore-index', type=int, metavar='ID',
                        help='mask value that counts for no class (e.g. 255)')
    parser.add_argument('--size', type=int, default=256, help='model input size (default 256)')
    parser.add_argument('--num-images', type=int, metavar='N', help='first N images')
    parser.add_argument('--tau', type=float, default=0.0,
                        help='a latent is active where its activation > tau (default 0)')
    parser.add_argument('--dense-fraction', type=float, default=0.2, metavar='F',
                        help='latents active on more than F of the pixels are not ranked '
                        '(default 0.2)')
    parser.add_argument('--top-k', type=int, default=3, help='latents per class (default 3)')
    parser.add_argument('--figures', type=int, default=4, metavar='K',
                        help='images per class figure; 0: no figures (default 4)')
    parser.add_argument('--batch-size', type=int, default=4, metavar='N',
                        help='images per teacher call (default 4)')
    parser.add_argument('--device', help='cpu or cuda (default: cuda when available)')
    parser.add_argument('--out', default='work_dirs/sae_mask_alignment', metavar='DIR',
                        help='output folder (default work_dirs/sae_mask_alignment)')
    _cli.add_cfg_options_arg(parser)
    args = parser.parse_args(argv)
    _cli.check_at_least_one(
        parser, args, ('num_classes', 'size', 'num_images', 'top_k', 'batch_size'))
    if not 0 < args.dense_fraction <= 1:
        parser.error(f'--dense-fraction must be in (0, 1], got {args.dense_fraction}')
    if args.class_names and len(args.class_names) != args.num_classes:
        parser.error(f'--class-names gives {len(args.class_names)} names for --num-classes '
                     f'{args.num_classes}; give one name per class id')
    return args


def main(argv=None):
    # data errors: one paragraph with the fix, exit 1
    return _cli.run_reporting(run, parse_args(argv), [
        'segmentation.sae.collect:SAEFeatureError',
        'segmentation.sae.alignment:AlignmentError',
        'segmentation.sae.train:SAECheckpointError',
    ])


def run(args):
    cfg = _cli.load_config(args.config, args.cfg_options)
    for name, example in (('teacher', "dict(type='DiffusionTeacher', pretrained=..., "
                           'layers=[BLOCK_PATH], timesteps=[T], seed=0)'),
                          ('sae', "dict(type='TopKSAE', d_in=512, d_sae=4096, k=32)")):
        if cfg.get(name) is None:
            raise _cli.UsageError(f'The config has no `{name}`: expected {example}.')
    _cli.check_local_file(args.checkpoint, 'SAE checkpoint')

    import importlib
    import os

    import torch
    from mmengine.registry import MODELS

    importlib.import_module('segmentation.sae')  # registers the SAEs
    from segmentation.sae import alignment, figures, probe
    from segmentation.sae.collect import block_features, check_teacher
    from segmentation.sae.train import load_sae

    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    with _cli.config_scope(cfg):
        teacher = MODELS.build(cfg.teacher).to(device).eval()
        sae = MODELS.build(cfg.sae)
    check_teacher(teacher)
    load_sae(args.checkpoint, sae)
    sae = sae.to(device).eval()
    _, images, masks = probe.read_labelled_folder(args.data, args.size, args.num_images)
    acc = None
    kept = []  # latent maps of the images shown in figures: [N, n, h, w] at native size
    for start in range(0, len(images), args.batch_size):
        feats = block_features(teacher, images[start:start + args.batch_size])
        maps = alignment.latent_maps(sae, feats.to(device)).cpu()
        if acc is None:
            acc = alignment.MaskAlignment(maps.shape[1], args.num_classes, tau=args.tau,
                                          dense_fraction=args.dense_fraction,
                                          ignore_index=args.ignore_index)
        acc.update(maps, masks[start:start + args.batch_size])
        if args.figures:
            kept.append(maps)
    table = acc.table(args.class_names, top_k=args.top_k)
    table.update(layer=teacher.layers[0], timestep=teacher.timesteps[0],
                 checkpoint=osp.abspath(args.checkpoint), data=osp.abspath(args.data),
                 num_images=len(images))
    os.makedirs(args.out, exist_ok=True)
    alignment.write_table(table, osp.join(args.out, 'alignment.json'),
                          osp.join(args.out, 'alignment.md'))
    paths = []
    if args.figures:
        paths = figures.class_figures(images, masks, torch.cat(kept), table, args.out,
                                      top_k=args.top_k, max_images=args.figures)
    print(f'{PROG}: mean best IoU {table["mean_best_iou"]:.4f} over the classes present '
          f'({len(table["dense_latents"])} dense latents excluded); wrote '
          f'{osp.join(args.out, "alignment.json")}, alignment.md and {len(paths)} figure(s)',
          flush=True)


if __name__ == '__main__':
    sys.exit(_cli.run_cli(PROG, main))
