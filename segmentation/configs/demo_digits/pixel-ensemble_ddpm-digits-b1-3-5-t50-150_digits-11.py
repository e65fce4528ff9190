# The segmentation demo's main row: ddpm-segmentation's recipe on the digits DDPM teacher of
# `make demo` (a 32 x 32 pixel UNet2DModel): decoder output blocks 1, 3, 5 (64 ch @ 8 x 8,
# 48 @ 16 x 16, 24 @ 32 x 32: the last map of each decoder level, as ADM's [5, 8, 12] are) at
# t = 50 and 150, one shared noise; ten MLPs on the 20 labelled training images of digits_11
# (each foreground pixel labelled 1 + its digit, background 0), evaluated on held-out digits.
#   python tools/train.py segmentation/configs/demo_digits/<this config>
#   python tools/test.py  segmentation/configs/demo_digits/<this config> <work_dir>/epoch_1.pth
_base_ = ['../ddpm_seg/_base_/pixel-ensemble_adm_1xb64.py']

data_root = 'work_dirs/demo_segmentation/data'
image_size = 32
model = dict(
    num_classes=11,
    backbone=dict(teacher=dict(pretrained='work_dirs/demo/teacher/pipeline'), blocks=[1, 3, 5],
                  steps=[50, 150], image_size=image_size))
pipeline = [
    dict(type='LoadImageFromFile', imdecode_backend='pillow'),
    dict(type='LoadNpyAnnotations'),
    dict(type='PackSegInputs'),  # the release is 32 x 32 already
]
# the first 20 labelled training digits and the first 100 test digits of the release
train_dataloader = dict(dataset=dict(name='digits_11', data_root=data_root, number=20,
                                     pipeline=pipeline))
test_dataloader = dict(dataset=dict(name='digits_11', data_root=data_root, number=100,
                                    pipeline=pipeline))
test_evaluator = dict(ignore_label=255)
