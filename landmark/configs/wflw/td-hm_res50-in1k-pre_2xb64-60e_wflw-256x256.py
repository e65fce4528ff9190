# ResNet-50 top-down heatmap, WFLW 98 points, 256x256, backbone initialised from torchvision's
# ImageNet-1k weights (downloaded on first use) - the usual mmpose starting point, for reference.
_base_ = ['./td-hm_res50_2xb64-60e_wflw-256x256.py']
custom_imports = dict(imports=['common', 'landmark'], allow_failed_imports=False)

model = dict(
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')))
