# ResNet-50 student with dense L2.
_base_ = ['./repfusion-dense-l2_resnet18_4xb16-200e_celebahq.py']
model = dict(
    student=dict(backbone=dict(depth=50)),
    distill_pairs=dict(feat=dict(connector=dict(in_channels=2048))))
train_dataloader = dict(batch_size=8)
