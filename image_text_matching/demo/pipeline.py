"""``PixelTextPipeline``: a text-conditioned diffusion pipeline that works on pixels (no VAE).

The demo's trained model leaves the run as this pipeline's folder: ``unet/``
(``UNet2DConditionModel`` whose in/out channels are the image's), ``text_encoder/``
(``CLIPTextModel``), ``tokenizer/`` (the word-level tokenizer of ``tokenizer.py``) and
``scheduler/`` (the training ``DDPMScheduler``), plus ``model_index.json``. Stable Diffusion's
folder layout minus ``vae/``, so ``common.teachers.loading`` reads it component by component and
the image-text scorer treats the pixels as its latents.

The one rule: images go in and come out in [-1, 1] model space; ``__call__`` (DDIM sampling,
optional classifier-free guidance against the ``""`` caption) returns them mapped to [0, 1].
"""
import torch
from diffusers import DiffusionPipeline


class PixelTextPipeline(DiffusionPipeline):
    """UNet2DConditionModel + CLIPTextModel + tokenizer + scheduler, sampled in pixel space."""

    model_cpu_offload_seq = 'text_encoder->unet'

    def __init__(self, unet, text_encoder, tokenizer, scheduler):
        super().__init__()
        self.register_modules(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer,
                              scheduler=scheduler)

    @torch.no_grad()
    def encode_prompt(self, prompts):
        """``(N, L, D)`` last hidden states of the text encoder, padded to the tokenizer's
        ``model_max_length`` (as Stable Diffusion conditions its UNet)."""
        tokens = self.tokenizer(list(prompts), padding='max_length', truncation=True,
                                max_length=self.tokenizer.model_max_length, return_tensors='pt')
        ids = tokens.input_ids.to(self.text_encoder.device)
        return self.text_encoder(ids, return_dict=False)[0]

    @torch.no_grad()
    def __call__(self, prompt, num_images_per_prompt=1, num_inference_steps=50,
                 guidance_scale=1.0, eta=1.0, generator=None, output_type='np'):
        """DDIM samples for each prompt: ``[N, H, W, C]`` floats in [0, 1] (``output_type='np'``)
        or a ``[N, C, H, W]`` tensor in [0, 1] (``'pt'``); ``guidance_scale`` 1 = no guidance."""
        from diffusers import DDIMScheduler
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        prompts = [p for p in prompts for _ in range(int(num_images_per_prompt))]
        cond = self.encode_prompt(prompts)
        guided = float(guidance_scale) != 1.0
        if guided:
            cond = torch.cat([self.encode_prompt([''] * len(prompts)), cond])
        scheduler = DDIMScheduler.from_config(self.scheduler.config)
        scheduler.set_timesteps(int(num_inference_steps))
        size = self.unet.config.sample_size
        shape = (len(prompts), self.unet.config.in_channels, size, size)
        x = torch.randn(shape, generator=generator, dtype=cond.dtype).to(self.unet.device)
        for t in scheduler.timesteps:
            inp = torch.cat([x, x]) if guided else x
            eps = self.unet(inp, t, encoder_hidden_states=cond, return_dict=False)[0]
            if guided:
                uncond, text = eps.chunk(2)
                eps = uncond + float(guidance_scale) * (text - uncond)
            x = scheduler.step(eps, t, x, eta=float(eta), generator=generator,
                               return_dict=False)[0]
        images = (x.clamp(-1, 1) + 1) / 2
        if output_type == 'pt':
            return images
        return images.permute(0, 2, 3, 1).float().cpu().numpy()
