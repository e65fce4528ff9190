"""DIFT's feature-extraction protocol, re-implemented as the reference our teacher is timed against,
and the Stable Diffusion architectures (random weights) both run on.

The one rule: :func:`dift_features` does what DIFT's released code does
(Tsingularity/dift, ``src/models/dift_sd.py``: ``SDFeaturizer.forward`` and
``OneStepSDPipeline.__call__``), step for step, and nothing of ours:

  1. the single image is repeated ``ensemble_size`` times into one batch;
  2. the prompt is encoded on every call (``_encode_prompt`` without classifier-free guidance:
     the text encoder's last hidden state) and repeated ``ensemble_size`` times;
  3. the VAE encodes every copy and each copy takes its own posterior sample
     (``latent_dist.sample()``), times the scaling factor;
  4. ``noise = randn_like(latents)``; ``latents_noisy = scheduler.add_noise(latents, noise, t)``
     with a DDIMScheduler built from the pipeline's scheduler config, one scalar ``t``;
  5. the UNet runs with the prompt embeddings and stops after ``up_blocks[up_ft_index]`` (DIFT
     copies the UNet forward and breaks out of the up-block loop; here a hook stops it, which
     computes the same);
  6. the feature is that up block's output averaged over the copies: ``[1, C, h, w]``.

Not reproduced: ``enable_attention_slicing()`` followed by
``enable_xformers_memory_efficient_attention()`` (the second replaces the first's processors);
both sides here use PyTorch's scaled-dot-product attention, the same memory-efficient kernels.
DIFT loads the pipeline in float32 (no ``torch_dtype``), the default here.
"""

import torch

# Stable Diffusion 2.1 (stabilityai/stable-diffusion-2-1): UNet, VAE, OpenCLIP-H text encoder.
SD21 = dict(
    image_size=768,
    unet=dict(sample_size=96, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
              use_linear_projection=True, block_out_channels=(320, 640, 1280, 1280)),
    vae=dict(block_out_channels=(128, 256, 512, 512), latent_channels=4,
             down_block_types=('DownEncoderBlock2D', ) * 4,
             up_block_types=('UpDecoderBlock2D', ) * 4, sample_size=768, scaling_factor=0.18215),
    text=dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
              num_hidden_layers=23, max_position_embeddings=77, hidden_act='gelu',
              projection_dim=512, bos_token_id=0, eos_token_id=1, pad_token_id=1),
    scheduler=dict(beta_schedule='scaled_linear', beta_start=0.00085, beta_end=0.012,
                   num_train_timesteps=1000, prediction_type='v_prediction'),
)
# The same layout shrunk for CPU (``--sd-cpu``): 64 px, 4 blocks of 32/64 channels, 2 text layers.
SD_TINY = dict(
    image_size=64,
    unet=dict(sample_size=8, cross_attention_dim=32, attention_head_dim=(2, 4, 4, 4),
              use_linear_projection=True, block_out_channels=(32, 64, 64, 64)),
    vae=dict(block_out_channels=(32, 32, 64, 64), latent_channels=4,
             down_block_types=('DownEncoderBlock2D', ) * 4,
             up_block_types=('UpDecoderBlock2D', ) * 4, sample_size=64, scaling_factor=0.18215),
    text=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_attention_heads=2,
              num_hidden_layers=2, max_position_embeddings=77, hidden_act='gelu',
              projection_dim=32, bos_token_id=0, eos_token_id=1, pad_token_id=1),
    scheduler=SD21['scheduler'],
)


def char_tokenizer(folder, max_length=77):
    """A single-letter CLIP tokenizer in the real file format (no network); it stands for SD's
    49408-token vocabulary, whose embeddings are random here."""
    from tests.helpers.tiny_models import write_char_clip_tokenizer
    return write_char_clip_tokenizer(folder, max_length)


def sd_components(arch, tokenizer_dir, device='cpu', dtype=torch.float32):
    """``DiffusionComponents`` of an SD 1.x/2.x layout (random weights, seed 0)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from common.teachers.loading import DiffusionComponents
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**arch['unet'])
    vae = AutoencoderKL(**arch['vae'])
    text_encoder = CLIPTextModel(CLIPTextConfig(**arch['text']))
    nets = [m.to(device).eval().requires_grad_(False) for m in (unet, vae, text_encoder)]
    if dtype != torch.float32:
        nets = [m.to(dtype=dtype) for m in nets]
    return DiffusionComponents(nets[0], DDPMScheduler(**arch['scheduler']), nets[1], (nets[2], ),
                               (char_tokenizer(tokenizer_dir), ), source='sd-architecture')


class _Stop(Exception):
    pass


@torch.no_grad()
def dift_features(parts, img_tensor, prompt='', t=261, up_ft_index=1, ensemble_size=8,
                  latent_eps=None, noise=None):
    """DIFT's ``SDFeaturizer.forward`` (see the module docstring) on ``parts``
    (``DiffusionComponents``): ``img_tensor`` [1, 3, H, W] in [-1, 1] → ``[1, C, h, w]``.

    ``latent_eps`` and ``noise`` ([ensemble_size, 4, h, w]) replace DIFT's two random draws
    (the posterior samples and ``randn_like``) when given, to check that another implementation
    computes the same thing; DIFT itself draws them from the global RNG.
    """
    from diffusers import DDIMScheduler
    unet, vae = parts.unet, parts.vae
    text_encoder, tokenizer = parts.text_encoders[0], parts.tokenizers[0]
    device, dtype = unet.device, unet.dtype
    img_tensor = img_tensor.repeat(ensemble_size, 1, 1, 1).to(device, dtype)
    ids = tokenizer(prompt, padding='max_length', max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors='pt').input_ids.to(device)
    prompt_embeds = text_encoder(ids)[0].to(dtype).repeat(ensemble_size, 1, 1)

    dist = vae.encode(img_tensor).latent_dist
    if latent_eps is None:
        latents = dist.sample()
    else:
        latents = dist.mean + dist.std * latent_eps.to(device, dtype)
    latents = latents * vae.config.scaling_factor
    scheduler = DDIMScheduler.from_config(parts.noise_scheduler.config)
    t = torch.tensor(t, dtype=torch.long, device=device)
    noise = torch.randn_like(latents) if noise is None else noise.to(device, dtype)
    latents_noisy = scheduler.add_noise(latents, noise, t)

    store = {}

    def stop_after(module, args, output):
        store['up_ft'] = output
        raise _Stop

    handle = unet.up_blocks[up_ft_index].register_forward_hook(stop_after)
    try:
        unet(latents_noisy, t, encoder_hidden_states=prompt_embeds)
    except _Stop:
        pass
    finally:
        handle.remove()
    return store['up_ft'].mean(0, keepdim=True)
