# HRNetV2-W18 top-down heatmap, WFLW 98 points, 256x256, backbone initialised from the ImageNet-1k
# HRNetV2-W18 of open-mmlab (downloaded on first use); mmpose's published WFLW model starts here.
_base_ = ['./td-hm_hrnetv2-w18_2xb128-60e_wflw-256x256.py']
custom_imports = dict(imports=['common', 'landmark'], allow_failed_imports=False)

model = dict(
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='open-mmlab://msra/hrnetv2_w18')))
