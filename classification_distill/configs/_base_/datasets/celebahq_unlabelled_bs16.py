# CelebA-HQ faces for label-free distillation, read from the face-parsing data written by
# tools/dataset_converters/celebamask_hq.py (data/celebamask_hq/img_dir/{train,val,test}).
# By default only img_dir/train is used: the images of the segmentation validation and test
# splits are excluded from distillation (the reference distilled on all 30,000 images, i.e.
# transductively on the downstream test faces). To include them, use the *_all-faces configs.
# The student sees ImageNet-normalised images (as downstream BiSeNet/pose models do); the
# distiller undoes this normalisation for the diffusion teacher, which sees [-1, 1].
data_root = 'data/celebamask_hq'
data_preprocessor = dict(
    type='ClsDataPreprocessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
    to_rgb=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=256),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=16,
    num_workers=4,
    dataset=dict(type='CustomDataset', data_root=data_root, data_prefix='img_dir/train',
                 with_label=False, pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
