"""Distillation-step throughput (teacher live vs feature cache) and peak memory, side by side.

CIFAR-10 setting: DDPM-CIFAR10 teacher architecture (random weights) at
``mid_block.resnets.1.conv2``, fixed t=100 with a fixed noise seed (deterministic), ResNet-18
(CIFAR stem) student, 1x1 conv connector, pooled MSE, SGD.

  1. images/s of a training step with the teacher computed live vs read from a warm feature
     cache, the same batch every step (the cache's best case; target >= 3x on CPU);
  2. the same over ``--epochs`` epochs of a small synthetic dataset (``--images`` 32x32
     images) fed through the pipeline the CIFAR-10 configs really train with (mmpretrain's
     RandomCrop(32, padding=4) + RandomFlip(0.5) + PackInputs), and through a deterministic
     one (PackInputs only) for contrast, the cache starting empty as in a real run: hit rate,
     speed-up over the live teacher and the cache's disk growth (with the projection to
     CIFAR-10's 50,000 images x 200 epochs). Augmented batches are prepared before timing;
     both variants train on the very same batches;
  3. peak memory of a distillation step vs the same student trained alone (each measured in a
     fresh process: peak RSS on CPU, max allocated on CUDA). The teacher should add its weights
     and one no-grad forward, nothing more.

    python benchmarks/distill_step.py [--batch 32] [--steps 5] [--images 256] [--epochs 2]
        [--device cpu|cuda] [--skip-memory]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _timing import device_name, median_seconds, sync  # noqa: E402
from teacher_throughput import LAYER, save_ddpm_cifar10  # noqa: E402

STUDENT = dict(type='ImageClassifier', backbone=dict(type='ResNet_CIFAR', depth=18),
               neck=dict(type='GlobalAveragePooling'), head=None)
PREPROCESSOR = dict(type='ClsDataPreprocessor', mean=[127.5] * 3, std=[127.5] * 3)


def distiller_cfg(teacher_dir, cache_dir=None):
    return dict(
        type='FeatureDistiller', student=STUDENT, data_preprocessor=PREPROCESSOR,
        teacher=dict(type='DiffusionTeacher', pretrained=teacher_dir, layers=[LAYER],
                     timesteps=[100], seed=0, cache_dir=cache_dir),
        timestep_sampler=dict(type='FixedTimestep', timestep=100),
        distill_pairs=dict(feat=dict(
            student='backbone.layer4', teacher=LAYER,
            connector=dict(type='ConvConnector', in_channels=512, out_channels=256),
            loss=dict(type='PooledMSELoss'))))


def student_alone_cfg():
    return dict(type='ImageClassifier', data_preprocessor=PREPROCESSOR,
                backbone=STUDENT['backbone'], neck=STUDENT['neck'],
                head=dict(type='LinearClsHead', num_classes=10, in_channels=512))


def make_batch(n):
    from mmpretrain.structures import DataSample
    g = torch.Generator().manual_seed(0)
    inputs = (torch.rand(n, 3, 32, 32, generator=g) * 255)
    return dict(inputs=list(inputs), data_samples=[DataSample().set_gt_label(i % 10)
                                                   for i in range(n)])


def build(cfg, device):
    import classification_distill  # noqa: F401
    import common  # noqa: F401
    from mmengine.optim import build_optim_wrapper
    from mmpretrain.registry import MODELS
    model = MODELS.build(cfg).to(device)
    optim = build_optim_wrapper(model, dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)))
    return model, optim


def throughput(args, teacher_dir):
    batch = make_batch(args.batch)
    live, live_opt = build(distiller_cfg(teacher_dir), args.device)
    cached, cached_opt = build(distiller_cfg(teacher_dir, tempfile.mkdtemp()), args.device)
    cached.train_step(batch, cached_opt)  # warm the cache
    t_live = median_seconds(lambda: live.train_step(batch, live_opt), args.steps,
                            device=args.device)
    t_cache = median_seconds(lambda: cached.train_step(batch, cached_opt), args.steps,
                             device=args.device)
    print(f'  same batch every step, batch {args.batch}, warm cache: live teacher '
          f'{args.batch / t_live:.1f} img/s, feature cache {args.batch / t_cache:.1f} img/s -> {t_live / t_cache:.2f}x '
          f'(target >= 3x)')


# What the CIFAR-10 distillation configs train with (classification_distill/configs/
# repfusion_cifar10/*: train_dataloader.dataset.pipeline), and a deterministic pipeline.
CIFAR_TRAIN_PIPELINE = [dict(type='RandomCrop', crop_size=32, padding=4),
                        dict(type='RandomFlip', prob=0.5, direction='horizontal'),
                        dict(type='PackInputs')]
DETERMINISTIC_PIPELINE = [dict(type='PackInputs')]
CIFAR10_IMAGES, CIFAR10_EPOCHS = 50000, 200


def epoch_batches(pipeline_cfg, num_images, epochs, batch, seed=0):
    """Per epoch, the shuffled batches of a synthetic 32x32 dataset after ``pipeline_cfg``
    (mmpretrain transforms, collated as the dataloader does)."""
    import numpy as np
    import mmpretrain.datasets  # noqa: F401  registers the transforms
    from mmengine.dataset import Compose, pseudo_collate
    from mmpretrain.registry import TRANSFORMS
    pipeline = Compose([TRANSFORMS.build(t) for t in pipeline_cfg])
    rng = np.random.RandomState(seed)
    images = rng.randint(0, 256, (num_images, 32, 32, 3), dtype=np.uint8)
    np.random.seed(seed)  # the transforms draw from numpy's global RNG
    out = []
    for _ in range(epochs):
        order = rng.permutation(num_images)
        out.append([pseudo_collate([pipeline(dict(img=images[i].copy(), gt_label=int(i % 10),
                                                  img_shape=(32, 32), ori_shape=(32, 32)))
                                    for i in order[s:s + batch]])
                    for s in range(0, num_images - batch + 1, batch)])
    return out


def _disk_usage(root):
    files = [os.path.join(d, f) for d, _, names in os.walk(root) for f in names]
    return (len(files), sum(os.path.getsize(f) for f in files),
            sum(os.stat(f).st_blocks * 512 for f in files))


def _train_epochs(model, optim, epochs, device):
    start = time.perf_counter()
    for batches in epochs:
        for data in batches:
            model.train_step(data, optim)
    sync(device)
    return time.perf_counter() - start


def epochs_with_pipeline(args, teacher_dir, name, pipeline_cfg):
    """Live teacher vs a cache starting empty, over ``args.epochs`` epochs of one pipeline."""
    epochs = epoch_batches(pipeline_cfg, args.images, args.epochs, args.batch)
    n_img = sum(len(d['inputs']) for batches in epochs for d in batches)
    cache_dir = tempfile.mkdtemp(prefix='feature-cache-')
    live, live_opt = build(distiller_cfg(teacher_dir), args.device)
    cached, cached_opt = build(distiller_cfg(teacher_dir, cache_dir), args.device)
    live.train_step(epochs[0][0], live_opt)  # warm-up of both (allocator, lazy init) on a
    warm = epoch_batches(pipeline_cfg, args.batch, 1, args.batch, seed=1)[0][0]  # batch not in
    cached.train_step(warm, cached_opt)  # the dataset, so the cache stays cold for the epochs
    before = _disk_usage(cache_dir)
    cache = cached.teacher.cache
    cache.hits = cache.misses = 0
    t_live = _train_epochs(live, live_opt, epochs, args.device)
    per_epoch, grown, t_cache = [], [], 0.0
    for batches in epochs:
        hits, misses, disk = cache.hits, cache.misses, _disk_usage(cache_dir)[2]
        t_cache += _train_epochs(cached, cached_opt, [batches], args.device)
        per_epoch.append((cache.hits - hits) / max(1, cache.hits - hits + cache.misses - misses))
        grown.append(_disk_usage(cache_dir)[2] - disk)
    files, size, on_disk = (a - b for a, b in zip(_disk_usage(cache_dir), before))
    hit_rate = cache.hits / max(1, cache.hits + cache.misses)
    # CIFAR-10 scale: the first epoch's growth once, then the last epoch's growth every epoch.
    scale = CIFAR10_IMAGES / args.images
    cifar = scale * (grown[0] + grown[-1] * (CIFAR10_EPOCHS - 1))
    print(f'  {name}, {args.images} images x {args.epochs} epochs, batch {args.batch}, cache '
          f'starting empty: live teacher {n_img / t_live:.1f} img/s, feature cache '
          f'{n_img / t_cache:.1f} img/s -> {t_live / t_cache:.2f}x; hit rate {hit_rate:.1%} '
          f'(per epoch: {", ".join(f"{r:.1%}" for r in per_epoch)}); cache grew by {files} '
          f'entries, {size / 2**20:.1f} MiB ({on_disk / 2**20:.1f} MiB on disk; per epoch: '
          f'{", ".join(f"{g / 2**20:.1f}" for g in grown)} MiB), projected to CIFAR-10 '
          f'({CIFAR10_IMAGES} images x {CIFAR10_EPOCHS} epochs): {cifar / 2**30:.1f} GiB')


def _status_kib(field):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f'{field} not in /proc/self/status')


def _reset_peak_rss():
    """Reset the kernel's peak-RSS mark (Linux: write 5 to clear_refs); return current RSS."""
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')
    return _status_kib('VmRSS')


def _peak_rss():
    return _status_kib('VmHWM')


def peak_memory_child(kind, teacher_dir, batch, device):
    """Run a few steps in this process and print peak memory as JSON."""
    model, optim = build(distiller_cfg(teacher_dir) if kind == 'distill' else student_alone_cfg(),
                         device)
    data = make_batch(batch)
    model.train_step(data, optim)  # warm-up: optimizer state, allocator pools
    sync(device)
    if device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _reset_peak_rss()
    for _ in range(3):
        model.train_step(data, optim)
    sync(device)
    peak = torch.cuda.max_memory_allocated() if device == 'cuda' else _peak_rss()
    teacher_bytes = 0
    if kind == 'distill':
        teacher_bytes = sum(p.numel() * p.element_size()
                            for net in model.teacher.held_networks().values()
                            for p in net.parameters())
    print(json.dumps(dict(peak=peak, before_steps=base, teacher_bytes=teacher_bytes)))


def peak_memory(args, teacher_dir):
    results = {}
    for kind in ('student', 'distill'):
        out = subprocess.run(
            [sys.executable, __file__, '--child', kind, '--teacher-dir', teacher_dir,
             '--batch', str(args.batch), '--device', args.device],
            capture_output=True, text=True, check=True).stdout
        results[kind] = json.loads(out.strip().splitlines()[-1])
    mib = 2**20
    s, d = results['student'], results['distill']
    label = 'max allocated' if args.device == 'cuda' else 'peak RSS'
    print(f'  {label} during steps, batch {args.batch}: student alone {s["peak"] / mib:.0f} MiB '
          f'(step adds {(s["peak"] - s["before_steps"]) / mib:.0f}), distillation '
          f'{d["peak"] / mib:.0f} MiB (step adds {(d["peak"] - d["before_steps"]) / mib:.0f}); '
          f'difference {(d["peak"] - s["peak"]) / mib:+.0f} MiB, of which teacher weights '
          f'{d["teacher_bytes"] / mib:.0f} MiB')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--batch', type=int, default=32)
    parser.add_argument('--steps', type=int, default=5)
    parser.add_argument('--images', type=int, default=256,
                        help='synthetic dataset size for the epochs with the real pipeline')
    parser.add_argument('--epochs', type=int, default=2)
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--skip-memory', action='store_true', help='skip the peak-memory part')
    parser.add_argument('--child', choices=['student', 'distill'], help=argparse.SUPPRESS)
    parser.add_argument('--teacher-dir', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        peak_memory_child(args.child, args.teacher_dir, args.batch, args.device)
        return
    teacher_dir = save_ddpm_cifar10(os.path.join(tempfile.mkdtemp(), 'ddpm-cifar10-arch'))
    print(f'device: {device_name(args.device)}; CIFAR-10 setting, median of {args.steps} steps')
    throughput(args, teacher_dir)
    epochs_with_pipeline(args, teacher_dir, 'CIFAR-10 training pipeline (RandomCrop(32, '
                         'padding=4) + RandomFlip)', CIFAR_TRAIN_PIPELINE)
    epochs_with_pipeline(args, teacher_dir, 'deterministic pipeline (PackInputs only)',
                         DETERMINISTIC_PIPELINE)
    if not args.skip_memory:
        peak_memory(args, teacher_dir)


if __name__ == '__main__':
    main()
