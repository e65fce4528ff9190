# RepFusion on faces: google/ddpm-ema-celebahq-256 at mid_block.resnets.1.conv2 (512 ch, 8x8 at
# 256 px), ImageNet-style ResNet-18 student (keys match mmseg's/mmpose's ResNet), student layer4
# (512 ch, 8x8) through a 1x1 conv, dense L2, spatial sizes aligned bilinearly when they differ.
# t = 0 as the reference (its max_time_step=1).
_base_ = ['../../../../common/configs/_base_/teachers/ddpm-ema-celebahq-256.py']
model = dict(
    type='FeatureDistiller',
    student=dict(type='ImageClassifier',
                 backbone=dict(type='ResNet', depth=18, out_indices=(3, )), head=None),
    teacher=_base_.teacher,
    timestep_sampler=dict(type='FixedTimestep', timestep=0),
    distill_pairs=dict(feat=dict(
        student='backbone.layer4',
        teacher='mid_block.resnets.1.conv2',
        connector=dict(type='ConvConnector', in_channels=512, out_channels=512),
        loss=dict(type='DenseMSELoss', loss_weight=1.0),
        align='bilinear')))
