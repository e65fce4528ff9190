# Tiny-ImageNet-200 at batch 128 (the reference's fine-tuning and from-scratch recipe).
_base_ = ['./tinyimagenet_bs64.py']
train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader
