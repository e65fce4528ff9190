# RepFusion: ResNet-18 (CIFAR stem) student, features of backbone.layer4 (512 ch) mapped by a
# 1x1 conv to the teacher's 256 channels, MSE on globally pooled features. The timestep sampler
# is set by each experiment.
_base_ = [
    './resnet18_cifar.py',
    '../../../../common/configs/_base_/teachers/ddpm-cifar10-32.py',
]
model = dict(
    _delete_=True,
    type='FeatureDistiller',
    student=dict(_base_.model, head=None),
    teacher=_base_.teacher,
    distill_pairs=dict(feat=dict(
        student='backbone.layer4',
        teacher='mid_block.resnets.1.conv2',
        connector=dict(type='ConvConnector', in_channels=512, out_channels=256),
        loss=dict(type='PooledMSELoss', loss_weight=1.0))))
