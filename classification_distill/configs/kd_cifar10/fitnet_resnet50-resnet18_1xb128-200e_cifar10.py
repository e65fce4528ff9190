# FitNet hints: student layer4 (512 ch) -> 1x1 conv + BN -> teacher layer4 (2048 ch), dense MSE.
_base_ = ['./kd-logit-t4_resnet50-resnet18_1xb128-200e_cifar10.py']
model = dict(distill_pairs=dict(_delete_=True, hint=dict(
    student='backbone.layer4', teacher='backbone.layer4',
    connector=dict(type='ConvConnector', in_channels=512, out_channels=2048, norm=True),
    loss=dict(type='FitNetHintLoss', loss_weight=1.0))))
