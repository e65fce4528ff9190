# Baseline: raw pixels as descriptors on the digits demo's affine pairs (the floor). The digits
# are grey (R = G = B), so under cosine similarity every stroke pixel has the same descriptor:
# this measures how far "land somewhere on a stroke near the source point" gets.
#   python tools/test.py correspondence/configs/demo_digits/pixels_softargmax_digits-affine.py
_base_ = ['../_base_/default_runtime.py', '../_base_/datasets/digits_affine_test.py']

model = dict(
    type='CorrespondenceModel',
    extractor=dict(type='PixelExtractor'),
    matcher=dict(type='SoftArgmaxMatcher', window=5, beta=0.02, mask='inf'),
    data_preprocessor=dict(type='PairDataPreprocessor'))
