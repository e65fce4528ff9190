# KD baselines with a classifier teacher: a trained ResNet-50 (CIFAR stem) teaches ResNet-18.
# The student also learns from the labels (student_loss=True); each experiment sets the pairs.
_base_ = ['./resnet18_cifar.py']
teacher_checkpoint = 'work_dirs/resnet50_1xb128-200e_cifar10/epoch_200.pth'
model = dict(
    _delete_=True,
    type='FeatureDistiller',
    student=_base_.model,
    teacher=dict(
        type='ClassifierTeacher',
        model=dict(_base_.model, backbone=dict(_base_.model.backbone, depth=50),
                   head=dict(_base_.model.head, in_channels=2048)),
        checkpoint=teacher_checkpoint,
        layers=['backbone.layer4', 'neck', 'head.fc']),
    student_loss=True,
    distill_pairs=dict())
