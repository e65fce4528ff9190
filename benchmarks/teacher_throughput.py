"""Teacher feature-extraction throughput, measured side by side in one run.

CPU (always):
  1. early exit at ``mid_block.resnets.1.conv2`` vs the full UNet forward, DDPM-CIFAR10
     architecture (google/ddpm-cifar10-32's config, random weights). Target: <= 0.35.
  2. one batched call for 64 images vs a per-image loop. Target: >= 1.5x.
GPU (when CUDA is available, or --sd-cpu to try the tiny variant on CPU):
  3. Stable Diffusion 2.1's architecture at 768 px in DIFT's setting (up_blocks.1, t=261,
     ensemble 8): ours (VAE once per image, the 8 noisy copies in one UNet call, early exit)
     vs DIFT's protocol (one image per call, the VAE encoding every noisy copy, full forward).
     Target: >= 5x, same features up to noise.

    python benchmarks/teacher_throughput.py [--repeats 5] [--batch 64]
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


def sd21_components(device, dtype):
    """SD 2.1's UNet/VAE architecture (random weights) as a pipeline folder."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=96, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
        use_linear_projection=True, block_out_channels=(320, 640, 1280, 1280))
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), latent_channels=4,
                        down_block_types=('DownEncoderBlock2D', ) * 4,
                        up_block_types=('UpDecoderBlock2D', ) * 4, sample_size=768,
                        scaling_factor=0.18215)
    sched = DDPMScheduler(beta_schedule='scaled_linear', beta_start=0.00085, beta_end=0.012)
    return unet.to(device, dtype), vae.to(device, dtype), sched


def gpu_benchmark(args):
    """Ours vs DIFT's protocol on SD 2.1's architecture (random weights, empty-prompt states)."""
    from common.teachers.diffusion_teacher import DiffusionTeacher
    from common.teachers.loading import DiffusionComponents
    device, dtype = 'cuda', torch.float16
    unet, vae, sched = sd21_components(device, dtype)
    text = torch.randn(1, 77, 1024, device=device, dtype=dtype)  # stands for the empty prompt

    teacher = DiffusionTeacher.__new__(DiffusionTeacher)  # build around in-memory components
    torch.nn.Module.__init__(teacher)
    teacher.__dict__.update(
        pretrained='sd21-arch', layers=['up_blocks.1'], timesteps=[261], noise='forward',
        ensemble=8, seed=0, prompt='', dtype_name='float16', compute_dtype=dtype,
        latent='mean', class_label=None, max_batch_size=None, early_exit=True, input_norm=None,
        _fingerprint=None, cache=None, _text_cache=(text, None), init_cfg=None)
    teacher._parts = DiffusionComponents(unet, sched, vae, (torch.nn.Identity(), ), ())
    teacher._hold(**teacher._parts.modules())
    from common.feature_hooks import resolve_modules
    teacher._layer_modules = resolve_modules(unet, teacher.layers)

    def dift_protocol(img):
        """One image per call; every noisy copy is VAE-encoded again; full UNet forward."""
        store = {}
        h = unet.up_blocks[1].register_forward_hook(lambda m, a, o: store.setdefault('f', o))
        feats = []
        g = torch.Generator(device).manual_seed(0)
        for _ in range(8):
            store.clear()
            latents = vae.encode(img).latent_dist.mean * vae.config.scaling_factor
            noise = torch.randn(latents.shape, generator=g, device=device, dtype=dtype)
            t = torch.tensor([261], device=device)
            unet(sched.add_noise(latents, noise, t), t, encoder_hidden_states=text)
            feats.append(store['f'].float())
        h.remove()
        return torch.stack(feats).mean(0)

    images = torch.rand(args.sd_images, 3, 768, 768, device=device, dtype=dtype) * 2 - 1
    with torch.inference_mode():
        ours = median_seconds(lambda: [teacher(images[i:i + 1]) for i in range(len(images))],
                              args.repeats, device=device)
        dift = median_seconds(lambda: [dift_protocol(images[i:i + 1]) for i in range(len(images))],
                              args.repeats, device=device)
        a = teacher(images[:1])['up_blocks.1@261']
        b = dift_protocol(images[:1])
        cos = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()
    print(f'device: {device_name(device)}; SD 2.1 architecture, 768 px, up_blocks.1, t=261, '
          f'ensemble 8, {args.sd_images} images, median of {args.repeats}')
    print(f'  ours {ours:.2f} s vs DIFT protocol {dift:.2f} s -> {dift / ours:.2f}x '
          f'(target >= 5x); cosine(ours, DIFT) = {cos:.4f} (same up to noise)')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--sd-images', type=int, default=4)
    args = parser.parse_args()
    import common  # noqa: F401
    cpu_benchmarks(args)
    if torch.cuda.is_available():
        gpu_benchmark(args)
    else:
        print('no CUDA device: the Stable Diffusion 2.1 / DIFT comparison needs a GPU (skipped)')


if __name__ == '__main__':
    main()
