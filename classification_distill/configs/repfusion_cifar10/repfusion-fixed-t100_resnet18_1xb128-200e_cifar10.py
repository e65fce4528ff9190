# RepFusion, fixed timestep: every image distilled at t=100 (noise='forward', the paper's x_t).
_base_ = [
    '../_base_/models/repfusion_resnet18_cifar.py',
    '../_base_/datasets/cifar10_bs128.py',
    '../_base_/schedules/distill-sgd-200e_step100-150.py',
    '../_base_/default_runtime.py',
]
model = dict(
    timestep_sampler=dict(type='FixedTimestep', timestep=100),
    data_preprocessor=_base_.data_preprocessor)
# Distillation has no validation: the student is evaluated by fine-tuning (see ../finetune_cifar10).
val_dataloader = None
val_evaluator = None
test_dataloader = None
test_evaluator = None
default_hooks = dict(checkpoint=dict(interval=10, max_keep_ckpts=2))
