# Fine-tune the student distilled by a RepFusion config (set the checkpoint it wrote).
_base_ = ['./resnet18_1xb64-200e_cifar10_scratch.py']
distilled_checkpoint = 'work_dirs/repfusion-policy_resnet18_1xb128-200e_cifar10/epoch_200.pth'
model = dict(backbone=dict(init_cfg=dict(
    type='Pretrained', checkpoint=distilled_checkpoint, prefix='student.backbone.')))
