# RepFusion on Tiny-ImageNet, REINFORCE timestep policy (the paper's main method): a LeNet policy
# over the 1000 timesteps, reward = -CE of a task head (768-384-384-200) on pooled teacher
# features. As in the reference's ResNet-18 config, the entropy bonus starts at 0.0 (so it stays
# off; EntropyDecayHook would decay a non-zero value to 0 by epoch 100). baseline=None and
# num_bins=None reproduce the reference; baseline='ema' / num_bins=10 lower the variance.
_base_ = ['./repfusion-fixed-t100_resnet18_1xb64-200e_tinyimagenet.py']
model = dict(
    timestep_sampler=dict(
        _delete_=True,
        type='ReinforceTimestepPolicy',
        num_classes=200,
        teacher_channels=768,
        num_bins=None,
        task_head_hidden=(384, 384),
        entropy_weight=0.0,
        baseline=None))
custom_hooks = [
    dict(type='EntropyDecayHook', end_epoch=100),
    dict(type='TimestepHistogramHook', num_bins=20),
]
