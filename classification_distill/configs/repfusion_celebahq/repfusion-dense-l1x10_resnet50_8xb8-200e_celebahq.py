# ResNet-50 student (layer4: 2048 ch), dense L1 x10 as the reference's R50 setting, batch 8 x 8.
_base_ = ['./repfusion-dense-l1x10_resnet18_4xb16-200e_celebahq.py']
model = dict(
    student=dict(backbone=dict(depth=50)),
    distill_pairs=dict(feat=dict(connector=dict(in_channels=2048))))
train_dataloader = dict(batch_size=8)
