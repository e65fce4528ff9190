# google/ddpm-cifar10-32: pixel DDPM, 32x32, RepFusion's CIFAR-10 teacher.
teacher = dict(
    type='DiffusionTeacher',
    pretrained='google/ddpm-cifar10-32',
    layers=['mid_block.resnets.1.conv2'],  # 256 ch, 4x4 at 32x32 input
    timesteps=[100],
    noise='forward',
    ensemble=1,
    seed=None,
    dtype='float32')
