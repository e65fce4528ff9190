# No distillation: the same ResNet-18 trained on the labels alone with the distillation stage's
# data and recipe (batch 64, SGD lr 0.1 Nesterov, 200 epochs, lr x0.1 at 100 and 150), validated
# every epoch. The fair baseline of a distilled-then-fine-tuned student is
# ../finetune_tinyimagenet/resnet18_1xb128-200e_tinyimagenet_scratch.py (the same fine-tuning
# recipe, no initialisation).
_base_ = ['../finetune_tinyimagenet/resnet18_1xb128-200e_tinyimagenet_scratch.py']
train_dataloader = dict(batch_size=64)
val_dataloader = dict(batch_size=64)
test_dataloader = val_dataloader
optim_wrapper = dict(optimizer=dict(nesterov=True))
auto_scale_lr = dict(base_batch_size=64)
