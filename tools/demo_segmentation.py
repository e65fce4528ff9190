"""Label-efficient segmentation and SAE dictionary learning on digits (``make demo-segmentation``).

Offline, on a CPU, in a few minutes; every step is an ordinary config run by a tool (the
commands are printed):

1. the teacher: the digits DDPM of ``make demo`` (``work_dirs/demo/teacher/pipeline``), trained
   when absent (``--teacher DIR``: any pixel DDPM pipeline folder instead);
2. the few-label task (``segmentation/datasets/digits_seg.py``), written once in the
   ddpm-segmentation on-disk format: 20 labelled training digits and ``--num-test`` held-out
   ones at 32 x 32, each foreground pixel labelled 1 + its digit, background 0 (11 classes);
3. ddpm-segmentation's pixel-MLP ensemble (``tools/train.py`` + ``tools/test.py`` on
   ``segmentation/configs/demo_digits/``) on three pixel features: the teacher's decoder blocks,
   raw pixels, and the teacher's architecture with random weights; the reference's dataset-level
   mIoU on the test digits;
4. a TopK sparse autoencoder on the teacher's block-3 tokens of the unlabelled training digits
   (``tools/collect_sae_features.py``, ``tools/train_sae.py``) and its latents against the test
   masks (``tools/analysis/sae_mask_alignment.py``: best latent per class by IoU);
5. ``results.json``, a table, ``predictions.png`` (test digits: image, ground truth, each
   ensemble's prediction) and the per-class latent figures of step 4.

    python tools/demo_segmentation.py [--work-dir work_dirs/demo_segmentation] [--num-test N]
                                      [--sae-images N] [--sae-steps N] [--max-epochs N]
                                      [--teacher DIR]
"""
import glob
import json
import os
import shutil
import sys
import time

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:  # imported, not run as a script
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _cli  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROG = 'tools/demo_segmentation.py'
CONFIGS = 'segmentation/configs/demo_digits'
ENSEMBLES = {
    'ddpm_teacher': f'{CONFIGS}/pixel-ensemble_ddpm-digits-b1-3-5-t50-150_digits-11.py',
    'raw_pixels': f'{CONFIGS}/pixel-ensemble_raw-pixels_digits-11.py',
    'random_init_unet': f'{CONFIGS}/pixel-ensemble_random-init-unet-b1-3-5-t50-150_digits-11.py',
}
SAE_CONFIG = f'{CONFIGS}/sae-topk-k8-x8_ddpm-digits-b3-t50_digits.py'
NUM_TRAIN = 20
CLASS_NAMES = ['background'] + [str(d) for d in range(10)]


def parse_args(argv=None):
    parser = _cli.ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0])
    parser.add_argument('--work-dir', default='work_dirs/demo_segmentation')
    parser.add_argument('--num-test', type=int, default=100,
                        help='held-out test digits (1..600; default 100)')
    parser.add_argument('--sae-images', type=int, default=None, metavar='N',
                        help='unlabelled training digits the SAE sees (default all 1197)')
    parser.add_argument('--sae-steps', type=int, default=None, metavar='N',
                        help="SAE optimiser steps (default: the SAE config's sae_train.steps)")
    parser.add_argument('--max-epochs', type=int, default=None, metavar='N',
                        help='cap the ensembles\' epochs (default: the configs\' 100 with the '
                        "reference's early stopping, which ends them after about 5)")
    parser.add_argument('--teacher', metavar='DIR',
                        help='a pixel DDPM pipeline folder (default: the digits teacher of '
                        '`make demo`, trained when absent)')
    parser.add_argument('--show', type=int, default=6, metavar='N',
                        help='test digits drawn in predictions.png (default 6)')
    args = parser.parse_args(argv)
    if not 0 < args.num_test <= 600:
        parser.error(f'--num-test {args.num_test}: use 1..600 (the held-out digits)')
    _cli.check_at_least_one(parser, args, ('sae_images', 'sae_steps', 'max_epochs'))
    if args.teacher is not None and not os.path.isfile(
            os.path.join(args.teacher, 'model_index.json')):
        parser.error(f'--teacher {args.teacher}: not a diffusers pipeline folder (no '
                     'model_index.json); pass the folder save_pretrained wrote')
    return args


def write_data(data_root, num_test, step, total):
    """The digits_11 release, written once per ``num_test``."""
    stamp = os.path.join(data_root, 'demo_data.json')
    wanted = dict(num_train=NUM_TRAIN, num_test=num_test)
    if os.path.isfile(stamp):
        with open(stamp) as f:
            if json.load(f) == wanted:
                print(f'[{step}/{total}] digits_11 exists at {data_root}')
                return
    print(f'[{step}/{total}] write the few-label digits task (digits_11: {NUM_TRAIN} labelled '
          f'training digits, {num_test} test digits) at {data_root}', flush=True)
    from segmentation.datasets import write_digits_seg_release
    write_digits_seg_release(data_root, num_train=NUM_TRAIN, num_test=num_test)
    with open(stamp, 'w') as f:
        json.dump(wanted, f)


def write_random_init_unet(teacher, out, step, total):
    """The teacher's UNet2DModel config with weights drawn under seed 0, and its scheduler."""
    if os.path.isfile(os.path.join(out, 'model_index.json')):
        print(f'[{step}/{total}] random-init UNet exists at {out}')
        return out
    print(f'[{step}/{total}] random-init UNet (the teacher\'s architecture, seed 0) at {out}',
          flush=True)
    import torch
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
    config = UNet2DModel.load_config(os.path.join(teacher, 'unet'))
    torch.manual_seed(0)
    unet = UNet2DModel.from_config(config)
    scheduler = DDPMScheduler.from_pretrained(teacher, subfolder='scheduler')
    tmp = out + '.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def write_sae_images(out, num_images, step, total):
    """Unlabelled training digits (32 x 32 PNGs) for the SAE's tokens."""
    stamp = os.path.join(out, 'demo_images.json')
    if os.path.isfile(stamp):
        with open(stamp) as f:
            if json.load(f) == dict(num_images=num_images):
                print(f'[{step}/{total}] unlabelled SAE images exist at {out}')
                return
    import numpy as np
    from PIL import Image

    from common.datasets.digits import _load_digits, digits_split_indices, upsample_digits
    images, labels = _load_digits()
    train = digits_split_indices(labels, split='train')
    if num_images is not None:
        train = np.sort(np.random.default_rng(0).choice(train, size=min(num_images, len(train)),
                                                        replace=False))
    print(f'[{step}/{total}] write {len(train)} unlabelled training digits for the SAE at {out}',
          flush=True)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    for index, image in zip(train, upsample_digits(images[train], image_size=32)):
        Image.fromarray(image).save(os.path.join(out, f'{int(index):04d}.png'))
    with open(stamp, 'w') as f:
        json.dump(dict(num_images=num_images), f)


def main(argv=None):
    args = parse_args(argv)
    from demo_repfusion import digits_teacher_pipeline, run
    wd = args.work_dir
    total = 4 + 2 * len(ENSEMBLES) + 4
    started = time.time()
    step = 1
    pipeline = digits_teacher_pipeline(args.teacher, step, total)
    step += 1
    data_root = os.path.join(wd, 'data')
    write_data(data_root, args.num_test, step, total)
    step += 1
    random_unet = write_random_init_unet(pipeline, os.path.join(wd, 'random_init_unet',
                                                                'pipeline'), step, total)
    data = f'train_dataloader.dataset.data_root={data_root}'
    test_data = f'test_dataloader.dataset.data_root={data_root}'
    test_number = f'test_dataloader.dataset.number={args.num_test}'
    teachers = dict(ddpm_teacher=pipeline, random_init_unet=random_unet)

    results = {}
    for name, cfg in ENSEMBLES.items():
        out = os.path.join(wd, name)
        options = [data, test_data, test_number]
        if args.max_epochs is not None:
            options.append(f'train_cfg.max_epochs={args.max_epochs}')
        if name in teachers:
            options.append(f'model.backbone.teacher.pretrained={teachers[name]}')
        step += 1
        run(step, total, f'pixel-MLP ensemble on 20 labelled digits: {name}',
            ['tools/train.py', cfg, '--work-dir', out, '--cfg-options', *options],
            os.path.join(out, 'train.log'))
        step += 1
        metrics_path = os.path.join(out, 'metrics.json')
        run(step, total, f'mIoU on the test digits: {name}',
            ['tools/test.py', cfg, os.path.join(out, 'epoch_1.pth'), '--work-dir', out,
             '--out', metrics_path, '--show-dir', os.path.join(out, 'vis'), '--cfg-options',
             *options],
            os.path.join(out, 'test.log'))
        with open(metrics_path) as f:
            metrics = json.load(f)
        metrics = metrics.get('metrics', metrics)
        results[name] = dict(mIoU=round(metrics['mIoU'], 2),
                             mIoU_skip_absent=round(metrics['mIoU_skip_absent'], 2))

    step += 1
    sae_images = os.path.join(wd, 'sae_images')
    write_sae_images(sae_images, args.sae_images, step, total)
    sae_options = [f'teacher.pretrained={pipeline}', f'sae_features.image_root={sae_images}']
    tokens = os.path.join(wd, 'sae_tokens')
    step += 1
    run(step, total, "collect the teacher's block-3 tokens of the unlabelled digits",
        ['tools/collect_sae_features.py', SAE_CONFIG, '--out', tokens, '--cfg-options',
         *sae_options], os.path.join(wd, 'sae_collect.log'))
    step += 1
    sae_dir = os.path.join(wd, 'sae')
    steps = [] if args.sae_steps is None else ['--steps', str(args.sae_steps)]
    run(step, total, 'train the TopK sparse autoencoder',
        ['tools/train_sae.py', SAE_CONFIG, '--features', tokens, '--work-dir', sae_dir, *steps,
         '--cfg-options', *sae_options], os.path.join(wd, 'sae_train.log'))
    with open(os.path.join(sae_dir, 'sae_metrics.json')) as f:
        sae_metrics = json.load(f)
    step += 1
    alignment_dir = os.path.join(wd, 'sae_alignment')
    run(step, total, "the SAE's latents against the test digits' masks",
        ['tools/analysis/sae_mask_alignment.py', SAE_CONFIG, sae_metrics['checkpoint'],
         '--data', os.path.join(data_root, 'digits_11', 'real', 'test'), '--num-classes', '11',
         '--class-names', *CLASS_NAMES, '--size', '32', '--out', alignment_dir,
         '--cfg-options', *sae_options], os.path.join(wd, 'sae_alignment.log'))
    with open(os.path.join(alignment_dir, 'alignment.json')) as f:
        table = json.load(f)

    picture = os.path.join(wd, 'predictions.png')
    draw_predictions({name: os.path.join(wd, name) for name in ENSEMBLES}, picture, args.show)
    evaluation = sae_metrics['eval']
    summary = dict(
        mIoU=results,
        protocol='the reference\'s dataset-level mIoU over 11 classes (absent classes count 0; '
                 'mIoU_skip_absent leaves them out)',
        sae=dict(config=SAE_CONFIG, fve=evaluation.get('fve'), nmse=evaluation.get('nmse'),
                 l0=evaluation.get('l0'), dead_latents=evaluation.get('num_dead'),
                 dense_latents=evaluation.get('num_dense'),
                 tokens_per_s=sae_metrics.get('tokens_per_s'),
                 mean_best_iou=table.get('mean_best_iou'),
                 best_latent_per_class=_best_per_class(table)),
        configs=dict(ENSEMBLES, sae=SAE_CONFIG), teacher=pipeline, num_train=NUM_TRAIN,
        num_test=args.num_test, minutes=round((time.time() - started) / 60, 1))
    from common.io import atomic_path  # noqa: E402 - after the runs, to keep start-up light
    with atomic_path(os.path.join(wd, 'results.json')) as tmp, open(tmp, 'w') as f:
        json.dump(summary, f, indent=2)
    print_table(summary)
    print(f'\nwrote {os.path.join(wd, "results.json")}, {picture} and the latent figures in '
          f'{alignment_dir}; total {summary["minutes"]} min')
    return 0


def _best_per_class(table):
    """``{class name: (latent, IoU)}`` from the alignment table (classes present only)."""
    out = {}
    for row in table.get('classes', []):
        if row.get('best_latent') is not None:
            out[row.get('name', str(row.get('class_id')))] = [row['best_latent'],
                                                                round(row['best_iou'], 4)]
    return out


def print_table(summary):
    print(f'\nmIoU (%) on {summary["num_test"]} held-out digits, 11 classes, ensembles trained '
          f'on {summary["num_train"]} labelled digits:')
    for name, row in summary['mIoU'].items():
        print(f'  {name:<18}{row["mIoU"]:>8.2f}   (skip absent {row["mIoU_skip_absent"]:.2f})')
    sae = summary['sae']
    print(f'TopK SAE on the teacher\'s block-3 tokens: held-out FVE {sae["fve"]:.3f}, L0 '
          f'{sae["l0"]:.2f}, dead latents {sae["dead_latents"]}; mean best-latent IoU over the '
          f'classes {sae["mean_best_iou"]:.3f}')


def draw_predictions(work_dirs, path, show):
    """One row per test digit: the overlays ``tools/test.py --show-dir`` wrote for each ensemble
    (image | ground truth | prediction, as the visualizer draws them), side by side."""
    from PIL import Image, ImageDraw
    columns = {}
    for name, wd in work_dirs.items():
        files = sorted(glob.glob(os.path.join(wd, 'vis', '**', '*.png'), recursive=True))
        columns[name] = files[:show]
    if not any(columns.values()):
        return
    tiles = {name: [Image.open(f).convert('RGB') for f in files]
             for name, files in columns.items()}
    first = next(t for t in tiles.values() if t)[0]
    scale = max(1, 96 // first.height)
    w, h = first.width * scale, first.height * scale
    sheet = Image.new('RGB', (len(tiles) * (w + 8), show * (h + 4) + 14), 'white')
    draw = ImageDraw.Draw(sheet)
    for c, (name, images) in enumerate(tiles.items()):
        draw.text((c * (w + 8) + 2, 1), name, fill='black')
        for r, image in enumerate(images):
            sheet.paste(image.resize((w, h), Image.NEAREST), (c * (w + 8), 14 + r * (h + 4)))
    sheet.save(path)


if __name__ == '__main__':
    sys.path.insert(0, ROOT)
    sys.exit(_cli.run_cli(PROG, main))
