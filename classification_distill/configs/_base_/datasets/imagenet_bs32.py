# ImageNet-1k in mmpretrain's layout: data/imagenet/{train,val}/ (+ meta/{train,val}.txt when
# present; without them the class folders of train/ are read). Trained at 256x256, the
# resolution of the guided-diffusion 256x256 teacher.
# mean = std = 127.5: the student sees the [-1, 1] images the diffusion teacher was trained on
# (the reference normalised with ImageNet's mean/std). to_rgb=True: images are read as BGR.
dataset_type = 'ImageNet'
data_root = 'data/imagenet'
data_preprocessor = dict(
    type='ClsDataPreprocessor', num_classes=1000, mean=[127.5] * 3, std=[127.5] * 3,
    to_rgb=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=256),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=292, edge='short'),  # 256 / 0.875, the usual centre-crop ratio
    dict(type='CenterCrop', crop_size=256),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=32,
    num_workers=8,
    dataset=dict(type=dataset_type, data_root=data_root, split='train', pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=32,
    num_workers=8,
    dataset=dict(type=dataset_type, data_root=data_root, split='val', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
