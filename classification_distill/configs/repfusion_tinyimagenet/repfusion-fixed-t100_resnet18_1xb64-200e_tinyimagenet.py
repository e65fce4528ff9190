# RepFusion on Tiny-ImageNet, fixed timestep: every image distilled at t=100 (noise='forward', the
# paper's x_t), the teacher conditioned on the image's ImageNet-1k class.
_base_ = [
    '../_base_/models/repfusion_resnet18_tinyimagenet.py',
    '../_base_/datasets/tinyimagenet_bs64.py',
    '../_base_/schedules/distill-sgd-200e_step100-150.py',
    '../_base_/default_runtime.py',
]
model = dict(
    timestep_sampler=dict(type='FixedTimestep', timestep=100),
    data_preprocessor=_base_.data_preprocessor)
# The reference's Tiny-ImageNet recipe: SGD lr 0.1 with Nesterov momentum at batch 64.
optim_wrapper = dict(optimizer=dict(nesterov=True))
auto_scale_lr = dict(base_batch_size=64)
# Distillation has no validation: the student is evaluated by fine-tuning
# (../finetune_tinyimagenet).
val_dataloader = None
val_evaluator = None
test_dataloader = None
test_evaluator = None
default_hooks = dict(checkpoint=dict(interval=10, max_keep_ckpts=2))
