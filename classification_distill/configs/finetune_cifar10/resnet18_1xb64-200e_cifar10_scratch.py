# Downstream fine-tuning recipe (RepFusion's): batch 64, SGD lr 0.1 nesterov, wd 1e-4, 200 epochs,
# steps at 100/150. This one starts from random weights; the *_from-repfusion config is identical
# except for the backbone's init_cfg, so the two rows compare like with like.
_base_ = [
    '../_base_/models/resnet18_cifar.py',
    '../_base_/datasets/cifar10_bs128.py',
    '../_base_/schedules/sgd-200e_step100-150.py',
    '../_base_/default_runtime.py',
]
model = dict(data_preprocessor=_base_.data_preprocessor)
train_dataloader = dict(batch_size=64)
optim_wrapper = dict(optimizer=dict(nesterov=True))
auto_scale_lr = dict(base_batch_size=64)
