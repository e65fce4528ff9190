# ResNet-18 on Tiny-ImageNet from scratch, the baseline of the distilled fine-tunes: the
# reference's fine-tuning recipe (batch 128, SGD lr 0.1 momentum 0.9 wd 1e-4, 200 epochs, lr x0.1
# at 100 and 150). The backbone is the distillation student's: mmpretrain's ImageNet-style ResNet
# (the reference fine-tuned a ResNet_CIFAR, whose 3x3 stem could not take the distilled 7x7 one).
_base_ = [
    '../_base_/datasets/tinyimagenet_bs128.py',
    '../_base_/schedules/sgd-200e_step100-150.py',
    '../_base_/default_runtime.py',
]
model = dict(
    type='ImageClassifier',
    backbone=dict(type='ResNet', depth=18, num_stages=4, out_indices=(3, ), style='pytorch'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=200, in_channels=512,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0), topk=(1, 5)),
    data_preprocessor=_base_.data_preprocessor)
default_hooks = dict(checkpoint=dict(interval=10, max_keep_ckpts=2))
