# DSD's prompt-learning schedule (dsd_train.py defaults): AdamW lr 1e-4, betas (0.9, 0.999),
# weight decay 1e-2, eps 1e-8, gradient norm clipped at 1.0, constant learning rate (its warmup
# argument does nothing with "constant"), 50 epochs by default (configs set their own), a
# checkpoint every 2,000 steps (the LoRA weights and the optimizer: a few MB each; all kept, as
# the reference; named iter_<step>.pth, the last one in last_checkpoint) and at the end; validation
# after every epoch.
_base_ = ['../default_runtime.py']
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8),
    clip_grad=dict(max_norm=1.0))
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=True)]
train_cfg = dict(by_epoch=True, max_epochs=50, val_interval=1)
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=2000, by_epoch=False, max_keep_ckpts=-1,
                    save_last=True))
