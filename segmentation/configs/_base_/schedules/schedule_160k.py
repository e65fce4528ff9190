# SGD, 1000-iteration linear warm-up, then poly decay to 160k iterations (BiSeNetV1 recipe of the
# CelebAMask-HQ face-parsing experiments: lr 0.005, momentum 0.9, weight decay 5e-4).
optimizer = dict(type='SGD', lr=0.005, momentum=0.9, weight_decay=0.0005)
optim_wrapper = dict(type='OptimWrapper', optimizer=optimizer, clip_grad=None)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=1000),
    dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=1000, end=160000, by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=160000, val_interval=16000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
# Checkpoint and logging hooks (every 16k iterations, best mIoU kept) are in ../default_runtime.py.
