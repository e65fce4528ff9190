# HRNetV2-W18 top-down heatmap, WFLW 98 points, 256x256, trained from scratch (the baseline of
# the reference).
_base_ = [
    '../_base_/models/td-hm_hrnetv2-w18.py',
    '../_base_/datasets/wflw_td-hm_256x256.py',
    '../_base_/schedules/wflw_adam-60e.py',
    '../_base_/default_runtime.py',
]
custom_imports = dict(imports=['common', 'landmark'], allow_failed_imports=False)

model = dict(head=dict(decoder=_base_.codec))
train_dataloader = dict(batch_size=128)  # x 2 GPUs
auto_scale_lr = dict(base_batch_size=256)
