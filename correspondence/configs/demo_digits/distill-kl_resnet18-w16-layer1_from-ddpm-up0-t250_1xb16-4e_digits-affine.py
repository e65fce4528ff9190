# The demo's distilled student: the random-init baseline's network (ResNet_CIFAR-18, 16 base
# channels, layer1, same seed: the very same starting weights) trained to reproduce the digits
# DDPM teacher's similarity maps (DistillDIFT's recipe on digits), then evaluated exactly as the
# zero-shot configs of this folder (same pairs, matcher and PCK protocol).
#   python tools/train.py correspondence/configs/demo_digits/distill-kl_resnet18-w16-layer1_from-ddpm-up0-t250_1xb16-4e_digits-affine.py
#   python tools/test.py  <the same config> <work_dir>/epoch_4.pth
# Training pairs: affine pairs of the teacher's TRAINING digits (never the evaluation's held-out
# digits), written by tools/demo_correspondence.py as PairAnnotation/trn; their keypoints are
# not used (supervision='teacher': unsupervised distillation).
_base_ = ['../_base_/default_runtime.py', '../_base_/datasets/digits_affine_test.py']

teacher_pipeline = 'work_dirs/demo/teacher/pipeline'
train_data_root = 'work_dirs/demo_correspondence/digits_affine_trn'

model = dict(
    type='CorrespondenceDistiller',
    # the student: random-init-resnet18-w16_softargmax_digits-affine.py's network, trainable
    extractor=dict(
        type='BackboneStudent',
        backbone=dict(type='mmpretrain.ResNet_CIFAR', depth=18, stem_channels=16,
                      base_channels=16, num_stages=1, strides=(1, ), dilations=(1, ),
                      out_indices=(0, )),
        seed=0, normalize=False),
    # the teacher: ddpm-teacher-up0-t250_softargmax_digits-affine.py's features (16x16), computed
    # online once per image and cached (one fixed noise draw: deterministic)
    teacher=dict(
        type='DiffusionExtractor',
        teacher=dict(type='DiffusionTeacher', pretrained=teacher_pipeline,
                     layers=['up_blocks.0'], timesteps=[250], noise='forward', seed=0,
                     cache_dir='work_dirs/demo_correspondence/teacher_cache')),
    supervision='teacher',
    # the teacher's 16x16 maps are resized to the student's 64x64 grid; 256 random source cells
    # per pair against all 4096 target cells
    sampler=dict(type='PointSampler', method='random', num_points=256),
    loss=dict(type='SimilarityDistillLoss', kind='kl', temperature=0.05),
    seed=0,
    matcher=dict(type='SoftArgmaxMatcher', window=5, beta=0.02, mask='inf'),
    data_preprocessor=dict(type='PairDataPreprocessor'))

train_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='pair_collate'),
    dataset=dict(type='SPair71kDataset', data_root=train_data_root, split='trn',
                 metainfo=dict(classes=('0', '1', '2', '3', '4', '5', '6', '7', '8', '9')),
                 pipeline=[dict(type='LoadImagePair'), dict(type='PackPair')]))

optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.0))
param_scheduler = [dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=0, end=4,
                        convert_to_iter_based=True)]
train_cfg = dict(by_epoch=True, max_epochs=4)
default_hooks = dict(logger=dict(type='LoggerHook', interval=10),
                     checkpoint=dict(type='CheckpointHook', interval=-1, save_last=True))
