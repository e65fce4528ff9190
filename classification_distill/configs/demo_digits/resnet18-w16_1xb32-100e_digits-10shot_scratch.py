# Step 3: fine-tune on a small labelled subset (10 images per class, subset_seed 0) and evaluate
# on the 600 held-out test digits. From scratch here; *_from-repfusion starts from a distilled
# student with the identical schedule. 100 epochs = 400 iterations: with 30 epochs every student
# ended with a training loss of 1.6-1.8 (under-fitted), so the table compared optimisation speed
# from a random or a distilled start, not what the distilled features are worth.
_base_ = [
    '../_base_/models/resnet18-w16_digits.py',
    '../_base_/datasets/digits_bs64.py',
    '../_base_/default_runtime.py',
]
labelled_per_class = 10
model = dict(data_preprocessor=_base_.data_preprocessor)
train_dataloader = dict(
    batch_size=32,
    dataset=dict(labelled_per_class=labelled_per_class, subset_seed=0))
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=5e-4))
param_scheduler = dict(type='CosineAnnealingLR', by_epoch=True, T_max=100, eta_min=0)
train_cfg = dict(by_epoch=True, max_epochs=100, val_interval=100)
val_cfg = dict()
test_cfg = dict()
default_hooks = dict(logger=dict(interval=4),
                     checkpoint=dict(interval=-1, save_last=True, max_keep_ckpts=1))
