# RepFusion, REINFORCE timestep policy (the paper's main method): a LeNet policy over the 1000
# timesteps, reward = -CE of a task head on pooled teacher features, entropy bonus 0.1 decayed
# linearly to 0 by epoch 100. baseline=None and num_bins=None reproduce the reference; set
# baseline='ema' and/or num_bins=10 for the lower-variance variants.
_base_ = ['./repfusion-fixed-t100_resnet18_1xb128-200e_cifar10.py']
model = dict(
    timestep_sampler=dict(
        _delete_=True,
        type='ReinforceTimestepPolicy',
        num_classes=10,
        teacher_channels=256,
        num_bins=None,
        task_head_hidden=(256, 256),
        entropy_weight=0.1,
        baseline=None))
custom_hooks = [
    dict(type='EntropyDecayHook', end_epoch=100),
    dict(type='TimestepHistogramHook', num_bins=20),
]
