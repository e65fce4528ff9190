# Relational KD (distance 25, angle 50) on the pooled embeddings.
_base_ = ['./kd-logit-t4_resnet50-resnet18_1xb128-200e_cifar10.py']
model = dict(distill_pairs=dict(_delete_=True, rkd=dict(
    student='neck', teacher='neck',
    loss=dict(type='RelationalKDLoss', distance_weight=25.0, angle_weight=50.0))))
