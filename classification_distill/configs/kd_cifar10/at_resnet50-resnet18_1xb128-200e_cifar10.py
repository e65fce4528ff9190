# Attention transfer (p=2) on layer4 maps, weight 1000 as in the reference; no connector needed.
_base_ = ['./kd-logit-t4_resnet50-resnet18_1xb128-200e_cifar10.py']
model = dict(distill_pairs=dict(_delete_=True, at=dict(
    student='backbone.layer4', teacher='backbone.layer4',
    loss=dict(type='AttentionTransferLoss', p=2, loss_weight=1000.0))))
