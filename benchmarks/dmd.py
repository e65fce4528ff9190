"""DMD speed: one-step generation vs the teacher's Heun sampler, and DMD / DMD2 training steps.

The one rule: every figure is measured in this one run, on the very same network (weights, device,
batch, latents), so the printed ratios compare like with like; nothing is taken from elsewhere.

  (a) sampling   images/s of the one-step generator ``G(z) = D(80 z; 80)`` (one network
                 evaluation) vs EDM's deterministic Heun sampler on the same network and latents
                 (``--steps`` 18 = 35 evaluations, float64 state, as the pair builder and
                 ``tools/generate_samples.py`` run it). The ideal ratio is the NFE ratio (35x);
                 the sampler's float64 updates cost a little on top. Target: >= 30x.
  (b) training   iterations/s of ``DMDDistiller.train_step`` built from the repository's own
                 CIFAR-10 configs (``generation_dmd/configs/dmd`` and ``dmd2``, the teacher swapped
                 for this network): DMD v1 (generator update with the DM loss + LPIPS-VGG@224
                 regression on pair batches, then the fake-score update: every step is both),
                 DMD2 (TTUR 5: a fake-score-only step (fake score + GAN discriminator on real
                 images) four times in five, a full step (generator with DM + GAN loss, EMA,
                 then the fake score) once in five), and DMD2's mean iteration.

Networks (EDMPrecond + SongUNet DDPM++ at 32 x 32, 10 classes, random weights):
  cifar10  EDM's CIFAR-10 architecture (128 channels, channel_mult [2, 2, 2], 4 blocks per level,
           attention at 16 x 16, augment_dim 9): for GPUs;
  cpu      (default) the same layout shrunk to 32 channels, channel_mult [1, 2], 1 block.
LPIPS-VGG has random weights here (no download; the cost is the real network's); pass
``--regression l2`` for the offline stand-in instead. Times are medians of ``--repeats`` after
``--warmup`` calls, the device synchronised around each; the two samplers alternate call by
call, so a slow spell of the machine hits both alike.

    python benchmarks/dmd.py [--preset cpu|cifar10] [--device cpu|cuda] [--batch 16]
        [--train-batch 4] [--steps 18] [--repeats 5] [--regression lpips|l2] [--skip-train]
        [--json OUT.json]
"""
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(_HERE)
for _path in (os.path.join(ROOT, 'tools'), ROOT, _HERE):
    if _path not in sys.path:
        sys.path.insert(0, _path)
import _cli  # noqa: E402

PROG = 'benchmarks/dmd.py'
CONFIGS = {'dmd': 'generation_dmd/configs/dmd/dmd_edm-ddpmpp_7xb56_cifar10-cond.py',
           'dmd2': 'generation_dmd/configs/dmd2/dmd2_edm-ddpmpp_8xb256_cifar10-cond.py'}
NUM_CLASSES = 10
# EDM's DDPM++ (train.py --arch=ddpmpp): positional noise embedding, standard encoder/decoder,
# box resample filter; SongUNet's defaults give 4 blocks, attention at 16 x 16, dropout 0.13.
DDPMPP = dict(img_resolution=32, img_channels=3, label_dim=NUM_CLASSES, model_type='SongUNet',
              embedding_type='positional', encoder_type='standard', decoder_type='standard',
              channel_mult_noise=1, resample_filter=[1, 1], augment_dim=9, dropout=0.13)
PRESETS = {
    'cifar10': dict(net=dict(DDPMPP, model_channels=128, channel_mult=[2, 2, 2], num_blocks=4,
                             attn_resolutions=[16]),
                    batch=256, train_batch=64, repeats=5,
                    what="EDM's CIFAR-10 DDPM++ (128 ch, [2, 2, 2], 4 blocks, attention 16x16)"),
    'cpu': dict(net=dict(DDPMPP, model_channels=32, channel_mult=[1, 2], num_blocks=1,
                         attn_resolutions=[16]),
                batch=16, train_batch=4, repeats=5,
                what='DDPM++ shrunk for CPUs (32 ch, [1, 2], 1 block, attention 16x16)'),
}
TARGET_RATIO = 30.0


def parse_args(argv=None):
    import argparse
    parser = _cli.ArgumentParser(prog=PROG, description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--preset', choices=sorted(PRESETS), default='cpu',
                        help='network size: cpu (default) or cifar10 (EDM\'s, for GPUs)')
    parser.add_argument('--device', default='cpu', help="'cpu' (default), 'cuda' or 'cuda:N'")
    parser.add_argument('--batch', type=int, help='images per sampling call (default: cpu 16, '
                        'cifar10 256)')
    parser.add_argument('--train-batch', type=int, help='images per training step (default: '
                        'cpu 4, cifar10 64)')
    parser.add_argument('--steps', type=int, default=18,
                        help='Heun steps of the teacher (default 18 = 35 evaluations)')
    parser.add_argument('--repeats', type=int, help='timed calls, median (default: cpu 5, '
                        'cifar10 5)')
    parser.add_argument('--warmup', type=int, default=1, help='untimed calls first (default 1)')
    parser.add_argument('--regression', choices=('lpips', 'l2'), default='lpips',
                        help='DMD v1 regression loss: lpips (LPIPS-VGG@224, random weights, '
                        'the real cost; default) or l2 (the offline stand-in)')
    parser.add_argument('--skip-train', action='store_true', help='only (a), the sampling')
    parser.add_argument('--seed', type=int, default=0, help='seed of weights and inputs')
    parser.add_argument('--json', metavar='OUT.json', help='also write the figures as JSON')
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    for name in ('batch', 'train_batch', 'repeats'):
        if getattr(args, name) is None:
            setattr(args, name, preset[name])
    for name in ('batch', 'train_batch', 'repeats'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} {getattr(args, name)}: must be at least 1')
    if args.warmup < 0:
        parser.error(f'--warmup {args.warmup}: must be 0 or more')
    if args.steps < 2:
        parser.error(f'--steps {args.steps}: the Heun sampler needs at least 2 steps')
    if args.device.split(':')[0] not in ('cpu', 'cuda'):
        parser.error(f"--device {args.device}: use 'cpu' or 'cuda' (optionally 'cuda:N')")
    if args.json is not None and not args.json.endswith('.json'):
        parser.error(f'--json {args.json}: the figures are JSON; name the file *.json')
    return args


# ------------------------------------------------------------------------------------ helpers
def build_network(preset, seed):
    import torch
    from generation_dmd.networks import EDMPrecond
    torch.manual_seed(seed)
    return EDMPrecond(**PRESETS[preset]['net']).eval()


def timed(fn, args):
    from _timing import median_seconds
    return median_seconds(fn, repeats=args.repeats, warmup=args.warmup, device=args.device)


def load_average():
    try:
        return tuple(round(x, 2) for x in os.getloadavg())
    except OSError:
        return None


# ------------------------------------------------------------------------------------ sampling
def bench_sampling(net, args):
    """(a): seconds per batch of the one-step generator and of the Heun sampler."""
    import torch
    from generation_dmd.generator import OneStepGenerator
    from generation_dmd.pairs import pair_latents
    from generation_dmd.sampling import edm_sampler
    generator = OneStepGenerator(net, sigma=80.0).to(args.device).eval()
    latents = pair_latents(range(args.batch), generator.image_shape, device=args.device)
    ids = torch.arange(args.batch, device=args.device) % NUM_CLASSES
    labels = torch.nn.functional.one_hot(ids, NUM_CLASSES).float()
    nfe = 2 * args.steps - 1
    from _timing import interleaved_median_seconds
    with torch.no_grad():  # alternating calls: both sides see the same machine state
        one, heun = interleaved_median_seconds(
            [lambda: generator(latents, ids),
             lambda: edm_sampler(generator.net, latents, labels, num_steps=args.steps)],
            repeats=args.repeats, warmup=args.warmup, device=args.device)
    rows = [dict(sampler='one-step generator (sigma 80)', nfe=1, batch=args.batch,
                 seconds=one, images_per_s=args.batch / one),
            dict(sampler=f'EDM Heun, {args.steps} steps', nfe=nfe, batch=args.batch,
                 seconds=heun, images_per_s=args.batch / heun)]
    return rows, heun / one


# ------------------------------------------------------------------------------------ training
def lpips_random_weights(folder):
    """A random-weight LPIPS-VGG state file (the real network's cost, no download)."""
    import warnings

    import lpips
    from safetensors.torch import save_model
    path = os.path.join(folder, 'lpips_vgg_random.safetensors')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        save_model(lpips.LPIPS(net='vgg', pretrained=False, pnet_rand=True, verbose=False), path)
    return path


def build_distiller(kind, teacher_dir, args, workdir):
    """The DMDDistiller and its OptimWrapperDict as the repository's config builds them, with
    this run's teacher folder (and LPIPS weights / L2 for DMD v1)."""
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import MODELS, DefaultScope
    cfg = Config.fromfile(os.path.join(ROOT, CONFIGS[kind]))  # imports its custom_imports
    model_cfg = cfg.model.to_dict()
    model_cfg['teacher'] = dict(type='load_edm', folder=teacher_dir)
    model_cfg['seed'] = args.seed
    if model_cfg.get('regression_loss') is not None:
        if args.regression == 'lpips':
            model_cfg['regression_loss']['weights_path'] = lpips_random_weights(workdir)
        else:
            model_cfg['regression_loss'] = dict(type='L2RegressionLoss', loss_weight=0.25)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        model = MODELS.build(model_cfg).to(args.device)
        optim = build_optim_wrapper(model, cfg.optim_wrapper.to_dict())
    return model.train(), optim


def pair_batch(n, device, seed):
    import torch
    gen = torch.Generator().manual_seed(seed)
    return dict(latent=torch.randn(n, 3, 32, 32, generator=gen).to(device),
                image=(torch.rand(n, 3, 32, 32, generator=gen) * 2 - 1).to(device),
                class_id=(torch.arange(n) % NUM_CLASSES).to(device))


def real_batch(n, seed):
    import torch
    from mmpretrain.structures import DataSample
    gen = torch.Generator().manual_seed(seed)
    inputs = torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8)
    return dict(inputs=list(inputs),
                data_samples=[DataSample().set_gt_label(i % NUM_CLASSES) for i in range(n)])


def bench_training(teacher_dir, args, workdir):
    """(b): seconds per training step of DMD v1 and of DMD2's two kinds of step."""
    import torch
    rows = []
    n = args.train_batch
    model, optim = build_distiller('dmd', teacher_dir, args, workdir)
    batch = pair_batch(n, args.device, args.seed)
    regression = ('LPIPS-VGG@224' if args.regression == 'lpips' else 'L2') + ' regression'
    rows.append(dict(step=f'DMD v1: generator (DM + {regression}) + fake score', batch=n,
                     seconds=timed(lambda: model.train_step(batch, optim), args)))
    del model, optim
    if args.device.startswith('cuda'):
        torch.cuda.empty_cache()
    model, optim = build_distiller('dmd2', teacher_dir, args, workdir)
    batch = real_batch(n, args.seed)

    def at_step(step):
        def run():
            model.step.fill_(step)  # the TTUR phase: step % 5 == 0 updates the generator
            return model.train_step(batch, optim)
        return run
    fake = timed(at_step(1), args)
    full = timed(at_step(0), args)
    ratio = model.ratio
    rows.append(dict(step='DMD2: fake-score step (fake score + GAN discriminator)', batch=n,
                     seconds=fake))
    rows.append(dict(step='DMD2: full step (generator DM + GAN, EMA, then fake score)', batch=n,
                     seconds=full))
    rows.append(dict(step=f'DMD2: mean iteration ({ratio - 1} fake-score + 1 full) / {ratio}',
                     batch=n, seconds=((ratio - 1) * fake + full) / ratio))
    for row in rows:
        row['iterations_per_s'] = 1 / row['seconds']
        row['images_per_s'] = n / row['seconds']
    return rows


# ------------------------------------------------------------------------------------ report
def print_report(result):
    print(f"\ndevice: {result['device_name']}; preset {result['preset']}: "
          f"{result['network']}, {result['parameters'] / 1e6:.2f}M weights; load average "
          f"before/after {result['load_before']} / {result['load_after']}")
    print('| sampler | NFE | batch | s / batch | images/s |')
    print('|---|---|---|---|---|')
    for r in result['sampling']:
        print(f"| {r['sampler']} | {r['nfe']} | {r['batch']} | {r['seconds']:.4f} | "
              f"{r['images_per_s']:.1f} |")
    ratio = result['speedup']
    print(f"one-step vs Heun: {ratio:.1f}x faster (target >= {TARGET_RATIO:.0f}x: "
          f"{'met' if ratio >= TARGET_RATIO else 'NOT met'}; NFE ratio "
          f"{result['sampling'][1]['nfe']}x)")
    if result.get('training'):
        print('\n| training step | batch | s / step | it/s | images/s |')
        print('|---|---|---|---|---|')
        for r in result['training']:
            print(f"| {r['step']} | {r['batch']} | {r['seconds']:.4f} | "
                  f"{r['iterations_per_s']:.2f} | {r['images_per_s']:.1f} |")


def main(argv=None):
    args = parse_args(argv)
    import json
    import tempfile
    import time

    import torch
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        sys.exit(f'{PROG}: error: --device {args.device} but torch sees no CUDA device; run on a '
                 'machine with a GPU or use --device cpu (with --preset cpu)')
    import importlib
    importlib.import_module('common')  # safe checkpoint loading and registries, as the tools
    from _timing import device_name
    from generation_dmd.networks import save_edm
    started, load_before = time.time(), load_average()
    net = build_network(args.preset, args.seed)
    result = dict(device=args.device, device_name=device_name(args.device), preset=args.preset,
                  network=PRESETS[args.preset]['what'],
                  parameters=sum(p.numel() for p in net.parameters()), seed=args.seed,
                  repeats=args.repeats, warmup=args.warmup, steps=args.steps,
                  load_before=load_before, torch=torch.__version__)
    print(f'{PROG}: {result["network"]} on {result["device_name"]}', flush=True)
    result['sampling'], result['speedup'] = bench_sampling(net, args)
    if not args.skip_train:
        with tempfile.TemporaryDirectory() as workdir:
            teacher_dir = save_edm(net, os.path.join(workdir, 'teacher'))
            result['training'] = bench_training(teacher_dir, args, workdir)
    result['load_after'] = load_average()
    result['seconds_total'] = time.time() - started
    print_report(result)
    print(f"total {result['seconds_total']:.1f} s")
    if args.json:
        from common.io.atomic import atomic_write_text
        atomic_write_text(args.json, json.dumps(result, indent=2) + '\n')
        print(f'figures written to {args.json}')
    return result


if __name__ == '__main__':
    main()
