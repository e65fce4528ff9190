# Stable Diffusion 1.5 in SD-DINO's setting ("A Tale of Two Features", Junyi42/sd-dino
# pck_spair_pascal.py defaults): t=100, empty prompt, the VAE posterior mean, one noise draw
# shared by every image (SD-DINO draws it once with seed 42), no ensemble.
# Layers: SD-DINO's decoder_only features of LDM output_blocks 2, 5, 8 ("s5", "s4", "s3") are the
# outputs of the 2nd res(+attn) block of up levels 0, 1, 2 (before the skip concatenation):
#   up_blocks.0.resnets.1 (1280 ch, H/64), up_blocks.1.attentions.1 (1280, H/32),
#   up_blocks.2.attentions.1 (640, H/16): 15 / 30 / 60 cells at SD-DINO's 960 px input.
# Differences from SD-DINO, on purpose: diffusers' UNet with forward hooks instead of ODISE/LDM
# code, and our seeded generator (not the same draw as SD-DINO's torch.Generator(42) buffer).
# The runwayml repo was taken down; its weights live on as the hub id below.
teacher = dict(
    type='DiffusionTeacher',
    pretrained='stable-diffusion-v1-5/stable-diffusion-v1-5',
    layers=['up_blocks.0.resnets.1', 'up_blocks.1.attentions.1', 'up_blocks.2.attentions.1'],
    timesteps=[100],
    noise='forward',
    ensemble=1,
    seed=42,
    prompt='',
    latent='mean',
    dtype='float32')
