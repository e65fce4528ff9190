# Baseline: the demo's student architecture (narrow ResNet-18, ResNet_CIFAR with 16 base
# channels) with random, frozen weights, on the digits demo's affine pairs: what the
# architecture alone gives. Its layer by the same quick look as the teacher's (60 pairs of seed 1,
# correspondence/configs/demo_digits/README.md): layer1 (out_indices=(0, ), 16 channels, stride 1:
# a 64x64 grid), the best of layer1-4 there (PCK@0.1 59.6 / 36.0 / 12.1 / 8.3). The network is
# built with its first stage only (num_stages=1): layer1's output needs nothing after it, and the
# distilled student (distill-kl_*.py) starts from exactly these seeded weights.
#   python tools/test.py correspondence/configs/demo_digits/random-init-resnet18-w16_softargmax_digits-affine.py
_base_ = ['../_base_/default_runtime.py', '../_base_/datasets/digits_affine_test.py']

model = dict(
    type='CorrespondenceModel',
    extractor=dict(
        type='RandomInitExtractor',
        backbone=dict(type='mmpretrain.ResNet_CIFAR', depth=18, stem_channels=16,
                      base_channels=16, num_stages=1, strides=(1, ), dilations=(1, ),
                      out_indices=(0, )),
        seed=0, normalize=False),
    matcher=dict(type='SoftArgmaxMatcher', window=5, beta=0.02, mask='inf'),
    data_preprocessor=dict(type='PairDataPreprocessor'))
