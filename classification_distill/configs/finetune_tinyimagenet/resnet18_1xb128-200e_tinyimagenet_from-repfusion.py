# The distilled checkpoint to start from (written by tools/train.py for a config of
# ../repfusion_tinyimagenet/); point it at the variant to evaluate, or pass
# --cfg-options model.backbone.init_cfg.checkpoint=PATH.
distilled_checkpoint = 'work_dirs/repfusion-policy_resnet18_1xb64-200e_tinyimagenet/epoch_200.pth'

# The distilled student's backbone (the keys under student.backbone.) fine-tuned on Tiny-ImageNet
# with the from-scratch recipe: only the initialisation differs from the baseline.
_base_ = ['./resnet18_1xb128-200e_tinyimagenet_scratch.py']
model = dict(backbone=dict(init_cfg=dict(
    type='Pretrained', checkpoint=distilled_checkpoint, prefix='student.backbone.')))
