# Supervised ResNet-18 (CIFAR stem) on CIFAR-10 without distillation: the reference point for
# every distillation row, and the same recipe as the KD students.
_base_ = [
    '../_base_/models/resnet18_cifar.py',
    '../_base_/datasets/cifar10_bs128.py',
    '../_base_/schedules/sgd-200e_step100-150.py',
    '../_base_/default_runtime.py',
]
model = dict(data_preprocessor=_base_.data_preprocessor)
