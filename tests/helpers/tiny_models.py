"""Tiny diffusion pipelines built from config and saved with ``save_pretrained`` (no network)."""
import json
import os

import torch


def tiny_unet2d(sample_size=16, channels=(32, 64), class_embeds=None):
    from diffusers import UNet2DModel
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=sample_size, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=channels, down_block_types=('DownBlock2D', 'AttnDownBlock2D'),
        up_block_types=('AttnUpBlock2D', 'UpBlock2D'), norm_num_groups=8, attention_head_dim=8,
        num_class_embeds=class_embeds)


def save_ddpm_pipeline(folder, sample_size=16, num_train_timesteps=1000, class_embeds=None):
    """A pixel DDPM pipeline folder (unet/ + scheduler/ + model_index.json)."""
    from diffusers import DDPMPipeline, DDPMScheduler
    unet = tiny_unet2d(sample_size, class_embeds=class_embeds)
    scheduler = DDPMScheduler(num_train_timesteps=num_train_timesteps)
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(folder)
    return folder


def write_char_clip_tokenizer(folder, max_length=8):
    """A CLIP BPE tokenizer whose vocabulary is the single letters, written in the real file
    format (no network); it stands for a real CLIP vocabulary in tests and CPU benchmarks."""
    from transformers import CLIPTokenizer
    vocab = {'<|startoftext|>': 0, '<|endoftext|>': 1}
    for c in 'abcdefghijklmnopqrstuvwxyz':
        vocab[c] = len(vocab)
        vocab[c + '</w>'] = len(vocab)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, 'vocab.json'), 'w') as f:
        json.dump(vocab, f)
    with open(os.path.join(folder, 'merges.txt'), 'w') as f:
        f.write('#version: 0.2\n')
    return CLIPTokenizer(os.path.join(folder, 'vocab.json'), os.path.join(folder, 'merges.txt'),
                         model_max_length=max_length)


def save_sd_pipeline(folder, xl=False):
    """A tiny Stable Diffusion (1.x/2.x layout, or XL with two text encoders) pipeline folder."""
    from diffusers import AutoencoderKL, PNDMScheduler, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
    torch.manual_seed(0)
    tok_dir = os.path.join(folder, '_tok_src')
    tokenizer = write_char_clip_tokenizer(tok_dir)
    text_cfg = dict(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                    num_attention_heads=2, num_hidden_layers=2, max_position_embeddings=8,
                    bos_token_id=0, eos_token_id=1, pad_token_id=1, projection_dim=16)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=('DownEncoderBlock2D', 'DownEncoderBlock2D'),
                        up_block_types=('UpDecoderBlock2D', 'UpDecoderBlock2D'),
                        block_out_channels=(8, 16), norm_num_groups=8, sample_size=32)
    unet_kwargs = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                       block_out_channels=(16, 32), norm_num_groups=8,
                       down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'),
                       up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D'), attention_head_dim=4)
    if xl:
        unet = UNet2DConditionModel(
            cross_attention_dim=32, addition_embed_type='text_time', addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=16 + 6 * 8, **unet_kwargs)
        from diffusers import StableDiffusionXLPipeline
        pipe = StableDiffusionXLPipeline(
            vae=vae, unet=unet, scheduler=EulerDiscreteScheduler(),
            text_encoder=CLIPTextModel(CLIPTextConfig(**text_cfg)),
            text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**text_cfg)),
            tokenizer=tokenizer, tokenizer_2=tokenizer)
    else:
        unet = UNet2DConditionModel(cross_attention_dim=16, **unet_kwargs)
        from diffusers import StableDiffusionPipeline
        pipe = StableDiffusionPipeline(
            vae=vae, unet=unet, scheduler=PNDMScheduler(skip_prk_steps=True, steps_offset=1),
            text_encoder=CLIPTextModel(CLIPTextConfig(**text_cfg)), tokenizer=tokenizer,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder


# A 2-layer DINOv2 with 14-pixel patches: a 28 x 28 image is 2 x 2 patch tokens.
TINY_DINO = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                 patch_size=14, image_size=28)


def save_dinov2_models(root, seed=0):
    """A tiny DINOv2 and a tiny DINOv2-with-registers (4 registers), random weights from
    ``seed``, saved with ``save_pretrained`` under ``root/plain`` and ``root/reg``; returns
    ``dict(plain=folder, reg=folder)``."""
    import torch
    from transformers import (Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig,
                              Dinov2WithRegistersModel)
    root = os.fspath(root)
    torch.manual_seed(seed)
    Dinov2Model(Dinov2Config(**TINY_DINO)).save_pretrained(os.path.join(root, 'plain'))
    Dinov2WithRegistersModel(Dinov2WithRegistersConfig(num_register_tokens=4, **TINY_DINO)) \
        .save_pretrained(os.path.join(root, 'reg'))
    return dict(plain=os.path.join(root, 'plain'), reg=os.path.join(root, 'reg'))

