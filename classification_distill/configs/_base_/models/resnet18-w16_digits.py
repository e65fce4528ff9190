# A narrow ResNet-18 (CIFAR stem, 16 base channels: 0.7M weights, 128-d output) that trains in
# seconds per epoch on a 2-core CPU.
model = dict(
    type='ImageClassifier',
    backbone=dict(type='ResNet_CIFAR', depth=18, stem_channels=16, base_channels=16,
                  out_indices=(3, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=128,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))
