# google/ddpm-ema-celebahq-256: pixel DDPM, 256x256, RepFusion's CelebA-HQ teacher.
teacher = dict(
    type='DiffusionTeacher',
    pretrained='google/ddpm-ema-celebahq-256',
    layers=['mid_block.resnets.1.conv2'],  # 512 ch, 8x8 at 256x256 input
    timesteps=[0],
    noise='forward',
    dtype='float32')
