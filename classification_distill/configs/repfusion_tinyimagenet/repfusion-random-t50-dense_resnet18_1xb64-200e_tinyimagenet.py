# RepFusion on Tiny-ImageNet, the reference's "dense" variant: t ~ U[0, 50), and the MSE taken at
# every position of the teacher's 8x8 map (the student's 2x2 layer4 map, after the 1x1 conv, is
# resized bilinearly to 8x8) instead of on pooled features.
_base_ = ['./repfusion-fixed-t100_resnet18_1xb64-200e_tinyimagenet.py']
model = dict(
    timestep_sampler=dict(_delete_=True, type='UniformTimestep', low=0, high=50),
    distill_pairs=dict(feat=dict(
        align='bilinear', loss=dict(_delete_=True, type='DenseMSELoss', loss_weight=1.0))))
