# ddpm-segmentation's pixel classifier as one experiment table: a frozen guided-diffusion ADM
# (converted with tools/convert/guided_diffusion_to_diffusers.py) gives every pixel the features
# of decoder blocks [5, 6, 7, 8, 12] at t = [50, 150, 250] (8448-d on the 256-px ADM, one shared
# noise, seed 0), and ten MLPs (Adam 1e-3, batch 64, the reference's early stopping) classify it.
# A dataset config sets: dataset name, number of classes, ignore label, teacher folder.
_base_ = ['../../_base_/default_runtime.py']

# the ddpm-segmentation parts, named one by one (importing `segmentation` alone may not reach
# them): dataset + .npy mask loader, feature extractor, segmentor, train loop, metric
custom_imports = dict(
    imports=['common', 'segmentation', 'segmentation.datasets.ddpm_seg',
             'segmentation.pixel_features', 'segmentation.models',
             'segmentation.engine.pixel_ensemble_loop', 'segmentation.evaluation.ddpm_seg_metric'],
    allow_failed_imports=False)
data_root = 'data/ddpm_seg'  # the extracted release: <data_root>/<name>/real/{train,test}/
image_size = 256

# images in [-1, 1], RGB (the reference: ToTensor then 2x - 1)
data_preprocessor = dict(
    type='SegDataPreProcessor', mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5],
    bgr_to_rgb=True, pad_val=0, seg_pad_val=255)
model = dict(
    type='DiffusionPixelSegmentor',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='PixelFeatureExtractor',
        teacher=dict(pretrained='checkpoints/adm-lsun-bedroom', dtype='float32'),
        blocks=[5, 6, 7, 8, 12],
        steps=[50, 150, 250],
        share_noise=True,
        seed=0,
        upsample='bilinear',
        image_size=image_size),
    num_classes=None,  # set by the dataset config
    num_models=10,
    hidden='auto',  # (128, 32) below 30 classes, (256, 128) from 30 on
    pixel_chunk=8192)

pipeline = [
    dict(type='LoadImageFromFile', imdecode_backend='pillow'),  # the release has gifs
    dict(type='LoadNpyAnnotations'),  # resized nearest to its image, then with it below
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=False),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=1,  # images per teacher call while the native features are extracted
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='DDPMSegDataset', name=None, data_root=data_root, split='train',
                 pipeline=pipeline))
test_dataloader = dict(
    batch_size=1,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='DDPMSegDataset', name=None, data_root=data_root, split='test',
                 pipeline=pipeline))

# Extract the native features once into <work_dir>/native_features (resumable), then train all
# ten MLPs in one pass over sampled pixel batches; the whole procedure is one loop "epoch".
train_cfg = dict(
    type='PixelEnsembleTrainLoop',
    feature_dir='native_features',
    sampler=dict(batch_size=64, drop_last=True),  # every labelled pixel each epoch (reference)
    max_epochs=100,
    patience=50,
    start_epoch=4,
    seed=0)
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=1e-3))  # the loop's lr
test_cfg = dict(type='TestLoop')
# the reference's dataset-level mIoU (absent classes 0) and the skip-absent variant
test_evaluator = dict(type='DDPMSegMIoU', ignore_label=255)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=True),
    # one checkpoint at the end of training: <work_dir>/epoch_1.pth (ensemble weights only)
    checkpoint=dict(type='CheckpointHook', by_epoch=True, interval=1, save_best=None,
                    max_keep_ckpts=1))
log_processor = dict(by_epoch=True)
randomness = dict(seed=0)  # the MLPs' initialisation
