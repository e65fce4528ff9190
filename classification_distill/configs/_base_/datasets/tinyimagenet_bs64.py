# Tiny-ImageNet-200: 64x64 images of 200 ImageNet classes, 100k for training and the 10k labelled
# validation images for testing, read through the lists that
#   python tools/dataset_converters/tinyimagenet.py data/tiny-imagenet-200
# writes to data/tiny-imagenet-200/meta/ (paths relative to data_root, class index = position of
# the wnid in the sorted wnids.txt).
# mean = std = 127.5: the student sees the [-1, 1] images the diffusion teacher was trained on
# (the reference normalised with ImageNet's mean/std, so its teacher saw a shifted range).
# to_rgb=True: images are read as BGR; the student and the teacher get RGB.
dataset_type = 'CustomDataset'
data_root = 'data/tiny-imagenet-200'
data_preprocessor = dict(
    type='ClsDataPreprocessor', num_classes=200, mean=[127.5] * 3, std=[127.5] * 3,
    to_rgb=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=64),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=64),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=64,
    num_workers=4,
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='meta/train.txt',
                 classes=data_root + '/meta/classes.txt', pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=64,
    num_workers=4,
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='meta/val.txt',
                 classes=data_root + '/meta/classes.txt', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
