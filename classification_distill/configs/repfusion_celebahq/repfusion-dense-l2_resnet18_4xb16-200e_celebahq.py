# RepFusion on CelebA-HQ (label-free), ResNet-18 student, dense L2: the student for the face
# parsing (segmentation/) and landmark (landmark/) configs.
_base_ = [
    '../_base_/models/repfusion_resnet18_celebahq.py',
    '../_base_/datasets/celebahq_unlabelled_bs16.py',
    '../_base_/schedules/distill-sgd-200e_step100-150.py',
    '../_base_/default_runtime.py',
]
model = dict(data_preprocessor=_base_.data_preprocessor)
default_hooks = dict(checkpoint=dict(interval=10, max_keep_ckpts=2))
auto_scale_lr = dict(base_batch_size=64)
