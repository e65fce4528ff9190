# BiSeNetV1 with a plain ResNet-50 context path, 19 face-parsing classes: the R18 model with the
# widths of ResNet-50 (keys `conv1.weight`, ..., `layer4.2.bn3.*`, as mmpretrain's ResNet-50 and
# torchvision's resnet50).
_base_ = ['./bisenetv1_r18-d32.py']
model = dict(
    backbone=dict(
        context_channels=(512, 1024, 2048),
        spatial_channels=(256, 256, 256, 512),
        out_channels=1024,
        backbone_cfg=dict(depth=50)),
    decode_head=dict(in_channels=1024, channels=1024),
    auxiliary_head=[
        dict(aux, in_channels=512, channels=256) for aux in _base_.model.auxiliary_head
    ])
