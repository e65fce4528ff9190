# Logit KD (Hinton et al.): KL between temperature-4 softmaxes, weight 1, plus the student's CE.
_base_ = [
    '../_base_/models/kd_resnet50-resnet18_cifar.py',
    '../_base_/datasets/cifar10_bs128.py',
    '../_base_/schedules/sgd-200e_step100-150.py',
    '../_base_/default_runtime.py',
]
model = dict(
    data_preprocessor=_base_.data_preprocessor,
    distill_pairs=dict(logits=dict(student='head.fc', teacher='head.fc',
                                   loss=dict(type='LogitKDLoss', temperature=4.0, loss_weight=1.0))))
