# RepFusion on ImageNet-1k: ImageNet-style ResNet-18 student (mmpretrain's ResNet), its
# backbone.layer4 (512 ch) mapped by a 1x1 conv to the 1024 channels of the unconditional
# guided-diffusion 256x256 teacher's mid_block.resnets.1.conv2 (= the original
# middle_block.2.out_layers.3), MSE on globally pooled features. The timestep sampler is set by
# each experiment.
_base_ = ['../../../../common/configs/_base_/teachers/guided-diffusion-imagenet256-uncond.py']
model = dict(
    type='FeatureDistiller',
    student=dict(
        type='ImageClassifier',
        backbone=dict(type='ResNet', depth=18, num_stages=4, out_indices=(3, ), style='pytorch'),
        neck=dict(type='GlobalAveragePooling'),
        head=None),
    teacher=_base_.teacher,
    distill_pairs=dict(feat=dict(
        student='backbone.layer4',
        teacher='mid_block.resnets.1.conv2',
        connector=dict(type='ConvConnector', in_channels=512, out_channels=1024),
        loss=dict(type='PooledMSELoss', loss_weight=1.0))))
