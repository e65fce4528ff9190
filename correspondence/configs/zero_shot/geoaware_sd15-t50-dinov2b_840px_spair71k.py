# GeoAware-SC zero-shot on SPair-71k test (Zhang et al., CVPR'24; Junyi42/GeoAware-SC with
# DUMMY_NET, SOFT_EVAL): SD 1.5 s5/s4/s3 at t=50 (raw, normalised together) + DINOv2-B/14 token
# layer 11 (normalised alone); images aspect-kept and zero-padded to 840 x 840 (LANCZOS); window
# soft-argmax (window 7, beta 0.02) on the 60 x 60 grid. No adaptive pose alignment (ADAPT_FLIP).
# SD runs at 840 px, not 960 (see _base_/models/geoaware_sd15-dinov2b.py).
#   python tools/test.py \
#       correspondence/configs/zero_shot/geoaware_sd15-t50-dinov2b_840px_spair71k.py
_base_ = [
    '../_base_/models/geoaware_sd15-dinov2b.py',
    '../_base_/datasets/spair71k_test.py',
    '../_base_/default_runtime.py',
]
test_pipeline = _base_.input_pipeline  # the recipe's input frame (its model base)
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
# GeoAware's per keypoint (KPT_RESULT; its Tab. 2, unsupervised) and per image (Tab. 3).
test_evaluator = dict(type='PCKMetric', presets=['geoaware_point', 'geoaware_image'],
                      alphas=(0.1, 0.05, 0.01))
