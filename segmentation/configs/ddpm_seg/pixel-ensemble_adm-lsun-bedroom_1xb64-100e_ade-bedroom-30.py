# ddpm-segmentation pixel-ensemble on ade_bedroom_30 (30 classes, ignore label 255): ADM lsun-
# bedroom teacher, blocks [5, 6, 7, 8, 12] at t = [50, 150, 250], ten MLPs, first-N images of the
# release's split.
_base_ = ['./_base_/pixel-ensemble_adm_1xb64.py']

model = dict(
    num_classes=30, backbone=dict(teacher=dict(pretrained='checkpoints/adm-lsun-bedroom')))
train_dataloader = dict(dataset=dict(name='ade_bedroom_30'))
test_dataloader = dict(dataset=dict(name='ade_bedroom_30'))
test_evaluator = dict(ignore_label=255)
