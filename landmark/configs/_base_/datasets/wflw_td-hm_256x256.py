# WFLW for top-down heatmap models: 256x256 face crops, 64x64 heatmaps (MSRA, sigma 2).
# Files: `python tools/dataset_converters/wflw.py data/wflw data/wflw/annotations`, with the
# official release unpacked under data/wflw/ (see landmark/README.md).
dataset_type = 'WFLWAttributeDataset'
data_mode = 'topdown'
data_root = 'data/wflw/'
data_prefix = dict(img='WFLW_images/')

# encodes the training targets here, decodes the head's heatmaps in the model (`head.decoder`)
codec = dict(type='MSRAHeatmap', input_size=(256, 256), heatmap_size=(64, 64), sigma=2)

# The reference (mmpose 0.x) augments with rot_factor=30 (rotation ~ N(0, 30 deg) clipped to
# +-60, with probability 0.6) and scale_factor=0.25 (scale in [0.75, 1.25]). mmpose 1.x's
# RandomBBoxTransform draws a normal truncated to [-1, 1] and multiplies it by the factor, so
# the same range is rotate_factor=60 and scale_factor=(0.75, 1.25).
train_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale', padding=1.25),
    dict(type='RandomFlip', direction='horizontal', prob=0.5),  # flip_indices from the metainfo
    dict(type='RandomBBoxTransform', shift_prob=0., rotate_factor=60, rotate_prob=0.6,
         scale_factor=(0.75, 1.25)),
    dict(type='TopdownAffine', input_size=codec['input_size']),
    dict(type='GenerateTarget', encoder=codec),
    dict(type='PackPoseInputs'),
]
# mmpose's default meta keys plus the attribute flags WFLWNMEMetric reads for the subsets
meta_keys = ('id', 'img_id', 'img_path', 'category_id', 'crowd_index', 'ori_shape', 'img_shape',
             'input_size', 'input_center', 'input_scale', 'flip', 'flip_direction',
             'flip_indices', 'raw_ann_info', 'dataset_name', 'wflw_attributes')
val_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale', padding=1.25),
    dict(type='TopdownAffine', input_size=codec['input_size']),
    dict(type='PackPoseInputs', meta_keys=meta_keys),
]

train_dataloader = dict(
    batch_size=64,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_mode=data_mode,
        ann_file='annotations/face_landmarks_wflw_train.json',
        data_prefix=data_prefix,
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=32,
    num_workers=4,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False, round_up=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_mode=data_mode,
        # a subset file (face_landmarks_wflw_test_blur.json, ...) evaluates that subset alone
        ann_file='annotations/face_landmarks_wflw_test.json',
        data_prefix=data_prefix,
        test_mode=True,
        pipeline=val_pipeline))
test_dataloader = val_dataloader

# NME over the full test set and each of its six attribute subsets, in one run
val_evaluator = dict(type='WFLWNMEMetric')
test_evaluator = val_evaluator
