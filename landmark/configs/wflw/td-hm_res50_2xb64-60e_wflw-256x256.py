# ResNet-50 top-down heatmap, WFLW 98 points, 256x256, trained from scratch (the baseline of the
# distilled variant td-hm_res50-distilled-pre_2xb64-60e_wflw-256x256.py).
_base_ = [
    '../_base_/models/td-hm_res50.py',
    '../_base_/datasets/wflw_td-hm_256x256.py',
    '../_base_/schedules/wflw_adam-60e.py',
    '../_base_/default_runtime.py',
]
custom_imports = dict(imports=['common', 'landmark'], allow_failed_imports=False)

model = dict(head=dict(decoder=_base_.codec))
train_dataloader = dict(batch_size=64)  # x 2 GPUs
auto_scale_lr = dict(base_batch_size=128)
