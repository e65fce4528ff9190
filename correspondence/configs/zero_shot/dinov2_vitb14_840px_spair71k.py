# DINOv2-B/14 zero-shot on SPair-71k test at 840 px (the "unsup. DINOv2 840" row of DistillDIFT's
# table, evaluated as its release evaluation does: images stretched to 840 x 840 (NO_PADDING),
# last-layer normalised patch tokens on 60 x 60 cells, window soft-argmax 5).
#   python tools/test.py correspondence/configs/zero_shot/dinov2_vitb14_840px_spair71k.py
# PF-WILLOW / CUB: dinov2_vitb14_840px_{pfwillow,cub}.py (same model and pipeline, the
# dataset base's protocol).
_base_ = [
    '../_base_/models/dinov2_vitb14.py',
    '../_base_/datasets/spair71k_test.py',
    '../_base_/default_runtime.py',
]
test_pipeline = _base_.input_pipeline  # the recipe's input frame (its model base)
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
# DistillDIFT's release protocol (its table's), with DIFT's and SD-DINO's alongside.
test_evaluator = dict(type='PCKMetric', presets=['distilldift_release', 'dift', 'sd_dino'],
                      alphas=(0.1, ))
