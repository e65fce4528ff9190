# BiSeNetV1-R50 face parsing on CelebAMask-HQ, context-path ResNet-50 initialised from
# torchvision's ImageNet-1k weights (downloaded on first use; its `fc.*` keys are reported as
# unexpected and not loaded).
_base_ = './bisenetv1_r50-d32_2xb4-160k_celebamaskhq-448x448.py'
model = dict(
    backbone=dict(
        backbone_cfg=dict(
            init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50'))))
