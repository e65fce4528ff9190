# Real CIFAR-10 training images: DMD2's GAN real side. mmpretrain's CIFAR10 reads the official
# python batches from data/cifar10 (download them once on a connected machine; download=False
# so an offline run stops at once with the missing path). No augmentation (EDM's teacher saw
# the plain train set). The data preprocessor maps uint8 to [-1, 1] as (x - 127.5) / 127.5.
data_preprocessor = dict(type='mmpretrain.ClsDataPreprocessor', mean=[127.5] * 3,
                         std=[127.5] * 3, to_rgb=False)
train_dataloader = dict(
    batch_size=256,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='mmpretrain.CIFAR10', data_root='data/cifar10', split='train',
                 download=False, pipeline=[dict(type='mmpretrain.PackInputs')]))
