# RepFusion policy with our two options: a moving-average reward baseline and 10 coarse bins.
_base_ = ['./repfusion-policy_resnet18_1xb128-200e_cifar10.py']
model = dict(timestep_sampler=dict(num_bins=10, baseline='ema', baseline_momentum=0.9))
