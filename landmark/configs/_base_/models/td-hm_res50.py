# Top-down heatmap model: ResNet-50 + HeatmapHead (3 deconvolutions, stride 32 -> 4), 98 points.
# No init_cfg: trained from scratch unless an experiment sets `backbone.init_cfg`.
# The head's `decoder` is the heatmap codec of the dataset base; experiments set it.
model = dict(
    type='TopdownPoseEstimator',
    data_preprocessor=dict(
        type='PoseDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True),
    backbone=dict(type='ResNet', depth=50),
    head=dict(
        type='HeatmapHead',
        in_channels=2048,
        out_channels=98,
        deconv_out_channels=(256, 256, 256),
        deconv_kernel_sizes=(4, 4, 4),
        loss=dict(type='KeypointMSELoss', use_target_weight=True)),
    test_cfg=dict(flip_test=True, flip_mode='heatmap', shift_heatmap=True))
