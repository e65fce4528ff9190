"""Teacher feature-extraction throughput, measured side by side in one run.

CPU (always, unless --skip-ddpm):
  1. early exit at ``mid_block.resnets.1.conv2`` vs the full UNet forward, DDPM-CIFAR10
     architecture (google/ddpm-cifar10-32's config, random weights). Target: <= 0.35.
  2. one batched call for 64 images vs a per-image loop. Target: >= 1.5x.
Stable Diffusion vs DIFT's protocol (CUDA: SD 2.1's architecture at 768 px; ``--sd-cpu``: the
same layout shrunk to 64 px on CPU, to check the comparison runs, not to time SD):
  3. DIFT's setting (up_blocks.1, t=261, ensemble 8, empty prompt, float32 as DIFT loads it).
     DIFT's protocol, re-implemented from its released code in ``_dift_reference.py``: one
     image per call, its 8 copies as one batch, the prompt encoded on every call, the VAE
     encoding every copy (one posterior sample each), the UNet stopping after up_blocks.1.
     Ours: ``DiffusionTeacher(latent='sample', ensemble=8)`` (the same computation: checked
     equal with the same random draws): the prompt encoded once, the VAE once per image, all
     images' copies in one UNet call. Reported: ours image by image and ours batched, each vs
     DIFT. Target: >= 5x.

    python benchmarks/teacher_throughput.py [--repeats 5] [--batch 64] [--sd-images 4]
        [--sd-cpu] [--sd-dtype float32|float16] [--sd-max-batch N] [--skip-ddpm]
"""
import argparse
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _timing import device_name, median_seconds  # noqa: E402

# google/ddpm-cifar10-32's UNet config (architecture only; weights are random here).
DDPM_CIFAR10_UNET = dict(
    sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
    block_out_channels=(128, 256, 256, 256),
    down_block_types=('DownBlock2D', 'AttnDownBlock2D', 'DownBlock2D', 'DownBlock2D'),
    up_block_types=('UpBlock2D', 'UpBlock2D', 'AttnUpBlock2D', 'UpBlock2D'),
    downsample_padding=0, flip_sin_to_cos=False, freq_shift=1, norm_eps=1e-6,
    norm_num_groups=32, attention_head_dim=None)
LAYER = 'mid_block.resnets.1.conv2'


def save_ddpm_cifar10(folder):
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
    torch.manual_seed(0)
    DDPMPipeline(unet=UNet2DModel(**DDPM_CIFAR10_UNET),
                 scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(folder)
    return folder


def cpu_benchmarks(args):
    from common.teachers import DiffusionTeacher
    folder = save_ddpm_cifar10(os.path.join(tempfile.mkdtemp(), 'ddpm-cifar10-arch'))
    kw = dict(layers=[LAYER], timesteps=[100], noise='forward', seed=0)
    early = DiffusionTeacher(folder, **kw)
    full = DiffusionTeacher(folder, early_exit=False, **kw)
    x = torch.rand(args.batch, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        t_early = median_seconds(lambda: early(x), args.repeats)
        t_full = median_seconds(lambda: full(x), args.repeats)
        same = torch.allclose(early(x)[f'{LAYER}@100'], full(x)[f'{LAYER}@100'], atol=1e-5)
        t_loop = median_seconds(lambda: [early(x[i:i + 1]) for i in range(len(x))], args.repeats)
    rows = [
        ('early exit / full forward (time ratio, target <= 0.35)', t_early, t_full,
         t_early / t_full),
        (f'batch-{args.batch} speed-up over per-image loop (target >= 1.5x)', t_early, t_loop,
         t_loop / t_early),
    ]
    print(f'device: {device_name("cpu")}; DDPM-CIFAR10 architecture, batch {args.batch}, '
          f'median of {args.repeats}')
    for name, a, b, ratio in rows:
        print(f'  {name}: {a * 1e3:.1f} ms vs {b * 1e3:.1f} ms -> {ratio:.2f}')
    print(f'  early-exit features equal full-forward features: {same}')


def sd_benchmark(args, device, arch_name):
    """Ours vs DIFT's protocol on an SD 2.x architecture (random weights), empty prompt."""
    from _dift_reference import SD21, SD_TINY, dift_features, sd_components

    from common.teachers.diffusion_teacher import LATENT_SEED_OFFSET, DiffusionTeacher
    arch = SD21 if arch_name == 'sd21' else SD_TINY
    dtype = getattr(torch, args.sd_dtype)
    parts = sd_components(arch, os.path.join(tempfile.mkdtemp(), 'tokenizer'), device, dtype)
    kw = dict(layers=['up_blocks.1'], timesteps=[261], ensemble=8, prompt='', latent='sample',
              dtype=args.sd_dtype)
    teacher = DiffusionTeacher(parts, seed=0, max_batch_size=args.sd_max_batch, **kw)
    size = arch['image_size']
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(args.sd_images, 3, size, size, generator=g) * 2 - 1).to(device)
    key = 'up_blocks.1@261'

    def dift_all():
        return torch.cat([dift_features(parts, images[i:i + 1]) for i in range(len(images))])

    def ours_per_image():
        return torch.cat([teacher(images[i:i + 1])[key] for i in range(len(images))])

    with torch.inference_mode():
        t_dift = median_seconds(dift_all, args.repeats, device=device)
        t_single = median_seconds(ours_per_image, args.repeats, device=device)
        t_batch = median_seconds(lambda: teacher(images)[key], args.repeats, device=device)
        # The same computation: DIFT's protocol fed our seeded draws gives our features.
        ours = teacher(images[:1])[key]
        lat_shape = (8, ) + tuple(teacher.encode(images[:1]).shape[1:])
        lat_eps = torch.randn(lat_shape,
                              generator=torch.Generator().manual_seed(LATENT_SEED_OFFSET))
        noise = torch.randn(lat_shape, generator=torch.Generator().manual_seed(0))
        same = dift_features(parts, images[:1], latent_eps=lat_eps, noise=noise).float()
        rel = ((ours - same).norm() / same.norm()).item()
        # DIFT as it runs: its own random draws; features agree up to the ensemble's noise.
        cos = torch.nn.functional.cosine_similarity(
            ours.flatten(), dift_features(parts, images[:1]).float().flatten(), dim=0).item()
    name = 'SD 2.1 architecture, 768 px' if arch_name == 'sd21' else \
        'tiny SD-architecture variant (64 px; checks the comparison, does not time SD)'
    print(f'device: {device_name(device)}; {name}, {args.sd_dtype}, up_blocks.1, t=261, '
          f'ensemble 8, empty prompt, {args.sd_images} images, median of {args.repeats}')
    print(f'  DIFT protocol {t_dift:.3f} s; ours image by image {t_single:.3f} s -> '
          f'{t_dift / t_single:.2f}x; ours batched ({args.sd_images} images x 8 copies per UNet '
          f'call) {t_batch:.3f} s -> {t_dift / t_batch:.2f}x (target >= 5x)')
    print(f'  same computation with the same draws: |ours - DIFT| / |DIFT| = {rel:.1e} '
          f'({args.sd_dtype} rounding, amplified by random weights); cosine(ours, DIFT with its '
          f'own random draws) = {cos:.4f} (differs by the ensemble\'s noise)')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--sd-images', type=int, default=4)
    parser.add_argument('--sd-cpu', action='store_true',
                        help='run the SD vs DIFT comparison on CPU with a tiny SD-architecture '
                        'variant (64 px) to check it works; SD 2.1 itself needs CUDA')
    parser.add_argument('--sd-dtype', default='float32', choices=['float32', 'float16'],
                        help="DIFT loads SD in float32 (the default); float16 for both sides")
    parser.add_argument('--sd-max-batch', type=int, default=None,
                        help='largest UNet batch of ours (images x 8 copies) if memory is short')
    parser.add_argument('--skip-ddpm', action='store_true', help='skip the DDPM-CIFAR10 part')
    args = parser.parse_args()
    import common  # noqa: F401
    if not args.skip_ddpm:
        cpu_benchmarks(args)
    if args.sd_cpu:
        sd_benchmark(args, 'cpu', 'tiny')
    elif torch.cuda.is_available():
        sd_benchmark(args, 'cuda', 'sd21')
    else:
        print('no CUDA device: the Stable Diffusion 2.1 / DIFT comparison needs a GPU (skipped; '
              '--sd-cpu runs it on a tiny SD-architecture variant to check it works)')


if __name__ == '__main__':
    main()
