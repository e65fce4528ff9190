# scikit-learn's handwritten digits (ships inside scikit-learn: no download). 8x8 images
# upsampled to 32x32 RGB; fixed stratified split: 1,197 train / 600 test (split_seed 0).
# mean = std = 127.5: the student sees the same [-1, 1] images as the diffusion teacher.
dataset_type = 'DigitsDataset'
data_preprocessor = dict(
    type='ClsDataPreprocessor', num_classes=10, mean=[127.5] * 3, std=[127.5] * 3, to_rgb=False)
train_pipeline = [
    dict(type='RandomCrop', crop_size=32, padding=2),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='PackInputs')]
train_dataloader = dict(
    batch_size=64,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(type=dataset_type, split='train', image_size=32, split_seed=0,
                 pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=200,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(type=dataset_type, split='test', image_size=32, split_seed=0,
                 pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
