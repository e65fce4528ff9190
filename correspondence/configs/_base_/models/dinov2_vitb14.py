# DINOv2-B/14 alone (the "unsup. DINOv2" rows of DistillDIFT's table): last-layer normalised patch
# tokens (x_norm_patchtokens = transformers' last_hidden_state, layer=-1), window soft-argmax 5
# as DistillDIFT's release evaluation (GeoAware pipeline, SOFT_EVAL_WINDOW 5), -inf masking
# (mask='zero' is the references' biased multiplicative mask).
# SD-DINO's DINO half is the raw 12th block instead: layer=12, final_norm=False.
model = dict(
    type='CorrespondenceModel',
    extractor=dict(type='DINOv2Extractor', pretrained='facebook/dinov2-base', layer=-1),
    matcher=dict(type='SoftArgmaxMatcher', window=5, beta=0.02, mask='inf'),
    data_preprocessor=dict(type='PairDataPreprocessor'))
# The recipe's model input (stretched to 840 x 840); test configs put it in their pipeline:
#   test_pipeline = _base_.input_pipeline
input_pipeline = [
    dict(type='LoadImagePair'),
    dict(type='ResizePair', frame='stretched', size=840),
    dict(type='PackPair'),
]
