# ResNet-50 top-down heatmap, WFLW 98 points, 256x256, backbone initialised from a ResNet-50
# student distilled from a diffusion teacher (RepFusion; mmpretrain ResNet, saved by the
# distiller under 'student.backbone.'). The Pretrained initializer of `common` logs any weight it
# did not match and fails when none matches.
#
# Point this at your distillation checkpoint, here or on the command line:
#   --cfg-options model.backbone.init_cfg.checkpoint=/path/to/distilled.pth
# (overriding `distilled_checkpoint` itself with --cfg-options has no effect: it is read once,
# below, when the config is parsed).
distilled_checkpoint = 'checkpoints/SET-ME_distilled-resnet50.pth'

_base_ = ['./td-hm_res50_2xb64-60e_wflw-256x256.py']
custom_imports = dict(imports=['common', 'landmark'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        init_cfg=dict(
            type='Pretrained', checkpoint=distilled_checkpoint, prefix='student.backbone.')))
