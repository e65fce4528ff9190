# CIFAR-10 (mmpretrain's CIFAR10 reads the official python pickle batches from data/cifar10; they
# are numpy arrays, downloaded once by mmpretrain when download=True on a machine that is online).
# mean = std = 127.5: the student sees the same [-1, 1] images as the diffusion teacher.
dataset_type = 'CIFAR10'
data_preprocessor = dict(
    type='ClsDataPreprocessor', num_classes=10, mean=[127.5] * 3, std=[127.5] * 3, to_rgb=False)
train_pipeline = [
    dict(type='RandomCrop', crop_size=32, padding=4),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='PackInputs')]
train_dataloader = dict(
    batch_size=128,
    num_workers=4,
    dataset=dict(type=dataset_type, data_root='data/cifar10', split='train',
                 pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=128,
    num_workers=4,
    dataset=dict(type=dataset_type, data_root='data/cifar10', split='test',
                 pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
