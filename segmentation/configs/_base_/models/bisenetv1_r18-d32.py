# BiSeNetV1 with a plain ResNet-18 context path, 19 face-parsing classes.
#
# The context-path backbone is mmseg's `ResNet` with `deep_stem=False` (its default; `ResNetV1c`
# would set it and replace `conv1` by `stem.*`), so its state-dict keys (`conv1.weight`, `bn1.*`,
# `layer1.0.conv1.weight`, ..., `layer4.1.bn2.*`) are exactly those of mmpretrain's `ResNet` and of
# torchvision's resnet18: a distilled mmpretrain student or ImageNet weights load key for key.
# All dilations are 1, so `contract_dilation` (which only acts on dilated stages) has no effect.
norm_cfg = dict(type='SyncBN', requires_grad=True)  # plain BN when not distributed (mmengine)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255)
num_classes = 19
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='BiSeNetV1',
        in_channels=3,
        context_channels=(128, 256, 512),
        spatial_channels=(64, 64, 64, 128),
        out_indices=(0, 1, 2),
        out_channels=256,
        backbone_cfg=dict(
            type='ResNet',
            in_channels=3,
            depth=18,
            num_stages=4,
            out_indices=(0, 1, 2, 3),
            strides=(1, 2, 2, 2),
            dilations=(1, 1, 1, 1),
            deep_stem=False,
            avg_down=False,
            norm_cfg=norm_cfg,
            norm_eval=False,
            style='pytorch'),
        norm_cfg=norm_cfg,
        align_corners=False,
        init_cfg=None),
    decode_head=dict(
        type='FCNHead',
        in_channels=256,
        in_index=0,
        channels=256,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=[
        dict(
            type='FCNHead',
            in_channels=128,
            channels=64,
            num_convs=1,
            num_classes=num_classes,
            in_index=in_index,
            norm_cfg=norm_cfg,
            concat_input=False,
            align_corners=False,
            loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0))
        for in_index in (1, 2)
    ],
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
