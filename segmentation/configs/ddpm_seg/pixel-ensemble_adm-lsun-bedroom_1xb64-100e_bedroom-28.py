# ddpm-segmentation pixel-ensemble on bedroom_28 (29 classes, ignore label 0 = background, not
# scored): ADM lsun-bedroom teacher, blocks [5, 6, 7, 8, 12] at t = [50, 150, 250], ten MLPs,
# first-N images of the release's split.
_base_ = ['./_base_/pixel-ensemble_adm_1xb64.py']

model = dict(
    num_classes=29, backbone=dict(teacher=dict(pretrained='checkpoints/adm-lsun-bedroom')))
train_dataloader = dict(dataset=dict(name='bedroom_28'))
test_dataloader = dict(dataset=dict(name='bedroom_28'))
test_evaluator = dict(ignore_label=0)
