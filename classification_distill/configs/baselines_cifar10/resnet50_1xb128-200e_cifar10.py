# The classifier teacher of the KD baselines: ResNet-50 (CIFAR stem) trained on CIFAR-10.
_base_ = ['./resnet18_1xb128-200e_cifar10.py']
model = dict(backbone=dict(depth=50), head=dict(in_channels=2048))
