# Stable Diffusion 2.1 (768 px) in DIFT's setting: up_blocks.1 at t=261, 8 noise draws, empty
# prompt, one VAE posterior draw per ensemble member (DIFT calls latent_dist.sample() on each
# copy), float32 as DIFT runs. Differences from DIFT's code, on purpose: the draws come from
# `seed` (deterministic features; DIFT uses the global RNG) and the VAE runs once per image
# (DIFT encodes all 8 copies). For speed on a GPU, dtype='float16' changes the features slightly.
teacher = dict(
    type='DiffusionTeacher',
    pretrained='stabilityai/stable-diffusion-2-1',
    layers=['up_blocks.1'],
    timesteps=[261],
    noise='forward',
    ensemble=8,
    seed=0,
    prompt='',
    latent='sample',
    dtype='float32')
