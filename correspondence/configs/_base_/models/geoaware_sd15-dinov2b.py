# GeoAware-SC zero-shot (Zhang et al., CVPR'24; Junyi42/GeoAware-SC with DUMMY_NET): SD 1.5
# s5/s4/s3 at t=50, raw (no PCA; 1280 + 1280 + 640 = 3200 ch), resized to 60 x 60 and
# L2-normalised together; DINOv2-B/14 token layer 11 (layer=12, final_norm=False, 768 ch)
# normalised alone; concatenated (3968-d); window soft-argmax (SOFT_EVAL) on the 60 x 60 grid,
# beta 0.02, window 7 cells either side of the argmax (GeoAware's SOFT_EVAL_WINDOW default:
# 15 x 15 cells).
# Differences from GeoAware-SC, documented:
# * -inf masking outside the window; mask='zero' is GeoAware's multiplicative mask (biased
#   towards the map's centre, see correspondence/matching.py). Predictions are cell centres
#   (x * 14 + 7 - 0.5), half a pixel left/up of GeoAware's x * 14 + 14 // 2.
# * SD runs at the pipeline's 840 px frame, not at 960 px (no per-extractor input size yet).
# * No test-time adaptive pose alignment (ADAPT_FLIP): not implemented; this is the plain
#   zero-shot matcher. Each SD layer builds its own teacher (see sd-dino_sd15-dinov2b.py).
_base_ = ['../../../../common/configs/_base_/teachers/sd-1-5_geoaware.py']
model = dict(
    type='CorrespondenceModel',
    extractor=dict(
        type='FusedExtractor',
        size='largest',  # DINOv2's 60 x 60
        extractors=[
            dict(type='FusedExtractor',  # SD: raw layers, one normalisation for all three
                 size='largest', normalize=False,
                 extractors=[
                     dict(type='DiffusionExtractor', teacher=_base_.teacher,
                          layer='up_blocks.0.resnets.1'),
                     dict(type='DiffusionExtractor', teacher=_base_.teacher,
                          layer='up_blocks.1.attentions.1'),
                     dict(type='DiffusionExtractor', teacher=_base_.teacher,
                          layer='up_blocks.2.attentions.1'),
                 ]),
            dict(type='DINOv2Extractor', pretrained='facebook/dinov2-base', layer=12,
                 final_norm=False),
        ],
        weights=[1.0, 1.0]),
    matcher=dict(type='SoftArgmaxMatcher', window=7, beta=0.02, mask='inf'),
    data_preprocessor=dict(type='PairDataPreprocessor'))
# The recipe's model input (aspect kept, Lanczos, zero-padded to 840 x 840); test configs put it in their pipeline:
#   test_pipeline = _base_.input_pipeline
input_pipeline = [
    dict(type='LoadImagePair'),
    dict(type='ResizePair', frame='padded', size=840, resample='lanczos'),
    dict(type='PackPair'),
]
