r"""Which timestep's block features separate the classes best: a linear pixel probe per timestep.

    python tools/analysis/sae_timestep_sweep.py CONFIG --train DIR --test DIR --num-classes N
        [--timesteps 50 150 250 ...] [--ignore-index 255] [--size 256] [--num-train N]
        [--num-test N] [--pixels-per-image 2000] [--probe-steps 100] [--batch-size 4]
        [--seed 0] [--device cpu] [--out DIR] [--cfg-options KEY=VALUE ...]

CONFIG holds ``teacher``: a ``DiffusionTeacher`` with ONE layer (the block the SAE is trained on,
e.g. the converted ADM's ``output_blocks[6]``) and a ``seed`` (shared fixed noise); its
``timesteps`` are replaced by --timesteps (one batched teacher call gives them all). --train and
--test are ddpm-segmentation labelled folders (square images + same-stem ``.npy`` masks; the
first --num-train / --num-test in sorted order). For each timestep a softmax-regression probe is
fitted on --pixels-per-image random labelled pixels per train image (features bilinearly
interpolated at those pixels from the native map) and every valid test pixel is classified
(``segmentation/sae/probe.py``). Written to --out (default
``work_dirs/sae_timestep_sweep``): ``sweep.json`` (per timestep: accuracy, mIoU over classes
present, the reference's mIoU with absent classes as 0, per-class IoU; and the best timestep by
mIoU) and ``sweep.png`` (accuracy and mIoU against t).
"""
import os
import os.path as osp
import sys

_TOOLS = osp.dirname(osp.dirname(osp.abspath(__file__)))
if _TOOLS not in sys.path:  # run as a script: first; imported (tests): last, shadowing nothing
    sys.path.insert(0 if __name__ == '__main__' else len(sys.path), _TOOLS)
import _cli  # noqa: E402

_cli.make_repo_importable()

PROG = 'tools/analysis/sae_timestep_sweep.py'


def parse_args(argv=None):
    parser = _cli.ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0],
                                 epilog='See the top of this file for the details.')
    parser.add_argument('config', help='config with teacher (one layer, a seed)')
    parser.add_argument('--train', required=True, metavar='DIR', help='labelled train folder')
    parser.add_argument('--test', required=True, metavar='DIR', help='labelled test folder')
    parser.add_argument('--num-classes', type=int, required=True, metavar='N',
                        help='class ids 0..N-1 in the masks')
    parser.add_argument('--timesteps', type=int, nargs='+', default=[50, 150, 250, 350, 500, 750],
                        metavar='T', help='timesteps to probe (default 50 150 250 350 500 750)')
    parser.add_argument('--ignore-index', type=int, metavar='ID',
                        help='mask value left out of training and scoring (e.g. 255)')
    parser.add_argument('--size', type=int, default=256, help='model input size (default 256)')
    parser.add_argument('--num-train', type=int, metavar='N', help='first N train images')
    parser.add_argument('--num-test', type=int, metavar='N', help='first N test images')
    parser.add_argument('--pixels-per-image', type=int, default=2000, metavar='N',
                        help='train pixels sampled per image (default 2000)')
    parser.add_argument('--probe-steps', type=int, default=100, metavar='N',
                        help='L-BFGS iterations of the probe (default 100)')
    parser.add_argument('--batch-size', type=int, default=4, metavar='N',
                        help='images per teacher call (default 4)')
    parser.add_argument('--seed', type=int, default=0, help='pixel sampling seed (default 0)')
    parser.add_argument('--device', help='cpu or cuda (default: cuda when available)')
    parser.add_argument('--out', default='work_dirs/sae_timestep_sweep', metavar='DIR',
                        help='output folder (default work_dirs/sae_timestep_sweep)')
    _cli.add_cfg_options_arg(parser)
    args = parser.parse_args(argv)
    _cli.check_at_least_one(parser, args, ('num_classes', 'size', 'num_train', 'num_test',
                                           'pixels_per_image', 'probe_steps', 'batch_size'))
    if any(t < 0 for t in args.timesteps):
        parser.error(f'--timesteps must be >= 0, got {args.timesteps}')
    return args


def main(argv=None):
    # data errors: one paragraph with the fix, exit 1
    return _cli.run_reporting(run, parse_args(argv), [
        'segmentation.sae.collect:SAEFeatureError',
    ])


def plot(results, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from segmentation.sae.figures import save_figure
    ts = [r['timestep'] for r in results]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(ts, [r['accuracy'] for r in results], 'o-', label='pixel accuracy')
    ax.plot(ts, [r['miou'] for r in results], 's-', label='mIoU (classes present)')
    ax.set_xlabel('timestep t')
    ax.set_ylabel('linear probe, test pixels')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def run(args):
    cfg = _cli.load_config(args.config, args.cfg_options)
    if cfg.get('teacher') is None:
        raise _cli.UsageError(
            "The config has no `teacher`: expected dict(type='DiffusionTeacher', pretrained=..., "
            'layers=[BLOCK_PATH], timesteps=[...], seed=0).')
    import json

    import torch
    from mmengine.registry import MODELS

    from common.io.atomic import atomic_write_text
    from segmentation.sae import probe
    from segmentation.sae.collect import check_teacher

    timesteps = sorted(set(args.timesteps))
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    teacher_cfg = dict(cfg.teacher, timesteps=timesteps)
    with _cli.config_scope(cfg):
        teacher = MODELS.build(teacher_cfg).to(device).eval()
    layer, _ = check_teacher(teacher, one_timestep=False)  # one layer, a seed

    def features(images):
        out = {t: [] for t in timesteps}
        with torch.no_grad():
            for start in range(0, len(images), args.batch_size):
                feats = teacher(images[start:start + args.batch_size].to(device))
                for t in timesteps:
                    out[t].append(feats[f'{layer}@{t}'].float().cpu())
        return {t: torch.cat(v) for t, v in out.items()}

    _, train_images, train_masks = probe.read_labelled_folder(args.train, args.size,
                                                              args.num_train)
    _, test_images, test_masks = probe.read_labelled_folder(args.test, args.size, args.num_test)
    train_feats, test_feats = features(train_images), features(test_images)
    results = []
    for t in timesteps:
        res = probe.probe_timestep(train_feats[t], train_masks, test_feats[t], test_masks,
                                   args.num_classes, args.pixels_per_image, args.ignore_index,
                                   args.seed, args.probe_steps)
        results.append(dict(timestep=t, **res))
        print(f'{PROG}: t={t}: accuracy {res["accuracy"]:.4f}, mIoU {res["miou"]:.4f}',
              flush=True)
    best = max(results, key=lambda r: r['miou'])
    record = dict(layer=layer, feature_shape=list(train_feats[timesteps[0]].shape[1:]),
                  num_train=len(train_images), num_test=len(test_images),
                  num_classes=args.num_classes, ignore_index=args.ignore_index,
                  pixels_per_image=args.pixels_per_image, seed=args.seed,
                  config=osp.abspath(args.config), results=results,
                  best_timestep=best['timestep'])
    os.makedirs(args.out, exist_ok=True)
    atomic_write_text(osp.join(args.out, 'sweep.json'), json.dumps(record, indent=1) + '\n')
    plot(results, osp.join(args.out, 'sweep.png'))
    print(f'{PROG}: best t={best["timestep"]} (mIoU {best["miou"]:.4f}); wrote '
          f'{osp.join(args.out, "sweep.json")} and sweep.png', flush=True)


if __name__ == '__main__':
    sys.exit(_cli.run_cli(PROG, main))
