# Zero-shot baseline on SPair-71k test: raw RGB pixels as descriptors, window soft-argmax.
# Runs on any machine (no pretrained weights): the floor every learned feature must clear.
#   python tools/test.py correspondence/configs/zero_shot/pixels_softargmax_spair71k.py
_base_ = ['../_base_/default_runtime.py', '../_base_/datasets/spair71k_test.py']

model = dict(
    type='CorrespondenceModel',
    extractor=dict(type='PixelExtractor'),
    # GeoAware-SC's window soft-argmax (5 cells, beta 0.02), with -inf masking outside the window
    matcher=dict(type='SoftArgmaxMatcher', window=5, beta=0.02, mask='inf'),
    data_preprocessor=dict(type='PairDataPreprocessor'))

# Pixels need no 840 input: a 224 padded frame keeps the similarity maps small on a CPU.
# Predictions are mapped back to original pixels; the metric applies each protocol's own frame.
test_pipeline = [
    dict(type='LoadImagePair'),
    dict(type='ResizePair', frame='padded', size=224),
    dict(type='PackPair'),
]
test_dataloader = dict(batch_size=4, dataset=dict(pipeline=test_pipeline))
test_evaluator = dict(presets=['dift', 'sd_dino'], alphas=(0.1, ))
