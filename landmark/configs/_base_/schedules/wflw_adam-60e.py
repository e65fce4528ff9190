# The WFLW schedule of the reference: Adam lr 2e-3, linear warm-up over 500 iterations from
# 1e-3 x lr, lr x 0.1 after epochs 40 and 55, 60 epochs, validation every epoch.
optim_wrapper = dict(optimizer=dict(type='Adam', lr=2e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', milestones=[40, 55], gamma=0.1, by_epoch=True, begin=0, end=60),
]
train_cfg = dict(by_epoch=True, max_epochs=60, val_interval=1)
val_cfg = dict()
test_cfg = dict()
# the lr above is for the total batch of the experiment's name; `--auto-scale-lr` rescales it
auto_scale_lr = dict(base_batch_size=128)
