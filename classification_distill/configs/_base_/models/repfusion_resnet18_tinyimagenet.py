# RepFusion on Tiny-ImageNet: ImageNet-style ResNet-18 student (mmpretrain's ResNet: 7x7 stem and
# max-pool, as in the reference's distillation config; the fine-tuning configs use the same
# backbone type so that every distilled weight loads). Its backbone.layer4 (512 ch) is mapped by a
# 1x1 conv to the 768 channels of the class-conditional guided-diffusion 64x64 teacher's
# mid_block.resnets.1.conv2 (= the original middle_block.2.out_layers.3), MSE on globally pooled
# features. The timestep sampler is set by each experiment.
#
# The teacher is conditioned on each image's class: teacher_label_map (written by
# tools/dataset_converters/tinyimagenet.py --imagenet-synsets) turns the Tiny-ImageNet index
# 0..199 into the ImageNet-1k id the teacher was trained with. teacher_label_map=None feeds the
# Tiny-ImageNet index as if it were an ImageNet id, as the reference did.
_base_ = ['../../../../common/configs/_base_/teachers/guided-diffusion-imagenet64.py']
model = dict(
    type='FeatureDistiller',
    student=dict(
        type='ImageClassifier',
        backbone=dict(type='ResNet', depth=18, num_stages=4, out_indices=(3, ), style='pytorch'),
        neck=dict(type='GlobalAveragePooling'),
        head=None),
    teacher=_base_.teacher,
    teacher_class_labels=True,
    teacher_label_map='data/tiny-imagenet-200/meta/imagenet_class_index.txt',
    distill_pairs=dict(feat=dict(
        student='backbone.layer4',
        teacher='mid_block.resnets.1.conv2',
        connector=dict(type='ConvConnector', in_channels=512, out_channels=768),
        loss=dict(type='PooledMSELoss', loss_weight=1.0))))
