# ddpm-segmentation pixel-ensemble on cat_15 (15 classes, ignore label 255): ADM lsun-cat teacher,
# blocks [5, 6, 7, 8, 12] at t = [50, 150, 250], ten MLPs, first-N images of the release's split.
_base_ = ['./_base_/pixel-ensemble_adm_1xb64.py']

model = dict(
    num_classes=15, backbone=dict(teacher=dict(pretrained='checkpoints/adm-lsun-cat')))
train_dataloader = dict(dataset=dict(name='cat_15'))
test_dataloader = dict(dataset=dict(name='cat_15'))
test_evaluator = dict(ignore_label=255)
