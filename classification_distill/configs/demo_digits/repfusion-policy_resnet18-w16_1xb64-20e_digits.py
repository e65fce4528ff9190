# Step 2b: the same distillation with RepFusion's REINFORCE timestep policy (10 coarse bins, a
# moving-average reward baseline, entropy bonus 0.1 decayed to 0 by epoch 10). The policy's
# reward comes from a task head on pooled teacher features, so this step uses the train labels;
# its input is standardised (task_head_input_norm=True; the reference feeds the raw feature, whose
# head then stays near chance here: classification_distill/README.md, "What we found", item 4).
_base_ = ['./repfusion-fixed-t100_resnet18-w16_1xb64-20e_digits.py']
model = dict(timestep_sampler=dict(
    _delete_=True,
    type='ReinforceTimestepPolicy',
    num_classes=10,
    teacher_channels=64,
    num_bins=10,
    task_head_hidden=(64, ),
    task_head_input_norm=True,
    entropy_weight=0.1,
    baseline='ema'))
custom_hooks = [
    dict(type='EntropyDecayHook', end_epoch=10),
    dict(type='TimestepHistogramHook', num_bins=10),
]
