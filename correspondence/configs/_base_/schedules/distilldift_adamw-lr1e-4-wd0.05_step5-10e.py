# DistillDIFT's distillation schedule (release train_config.yaml, distilled_us / distilled_ws):
# AdamW lr 1e-4, weight decay 0.05, 10 epochs, StepLR x0.1 after 5 epochs. Checkpoint every epoch.
# (with the subtree's runtime, whose checkpoint hook it configures)
_base_ = ['../default_runtime.py']
optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05))
param_scheduler = [dict(type='StepLR', step_size=5, gamma=0.1, by_epoch=True)]
train_cfg = dict(by_epoch=True, max_epochs=10, val_interval=1)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3,
                                     save_best='distilldift_release/pck@0.1/per_point',
                                     rule='greater'))
