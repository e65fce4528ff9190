# RepFusion on ImageNet-1k (config only, not run): ResNet-18 student, the unconditional
# guided-diffusion 256x256 teacher, each image at t ~ U[0, 50) as in the reference's ImageNet
# config; RandomResizedCrop 256, batch 32, SGD lr 0.1 momentum 0.9 wd 1e-4, 200 epochs, lr x0.1
# at 100 and 150.
_base_ = [
    '../_base_/models/repfusion_resnet18_imagenet.py',
    '../_base_/datasets/imagenet_bs32.py',
    '../_base_/schedules/distill-sgd-200e_step100-150.py',
    '../_base_/default_runtime.py',
]
model = dict(
    timestep_sampler=dict(type='UniformTimestep', low=0, high=50),
    data_preprocessor=_base_.data_preprocessor)
auto_scale_lr = dict(base_batch_size=32)
# Distillation has no validation: the student is evaluated by fine-tuning.
val_dataloader = None
val_evaluator = None
test_dataloader = None
test_evaluator = None
default_hooks = dict(checkpoint=dict(interval=10, max_keep_ckpts=2))
