# The released RepFusion code's teacher input: the clean image x0 with timestep t (no noise).
_base_ = ['./repfusion-fixed-t100_resnet18_1xb128-200e_cifar10.py']
model = dict(teacher=dict(noise='none'))
