# BiSeNetV1-R18 face parsing on CelebAMask-HQ, context-path ResNet-18 initialised from a
# ResNet-18 student distilled from a diffusion teacher (mmpretrain ResNet, saved by the
# distiller under 'student.backbone.').
#
# Point this at your distillation checkpoint, here or on the command line:
#   --cfg-options model.backbone.backbone_cfg.init_cfg.checkpoint=/path/to/distilled.pth
# (overriding `distilled_checkpoint` itself with --cfg-options has no effect: it is read once,
# below, when the config is parsed).
distilled_checkpoint = 'checkpoints/SET-ME_distilled-resnet18-celebahq.pth'

_base_ = './bisenetv1_r18-d32_2xb8-160k_celebamaskhq-448x448.py'
model = dict(
    backbone=dict(
        backbone_cfg=dict(
            init_cfg=dict(
                type='Pretrained', checkpoint=distilled_checkpoint,
                prefix='student.backbone.'))))
