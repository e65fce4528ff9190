# DIFT on SPair-71k test (Tang et al., NeurIPS'23; Tsingularity/dift eval_spair.py defaults):
# SD 2.1 up_blocks.1 at t=261, ensemble 8, prompt 'a photo of a {category}', images stretched to
# 768 x 768 (PIL's default bicubic; aspect not kept), cosine hard argmax (on the 48 x 48 grid:
# see _base_/models/dift_sd21.py for the difference from DIFT's full-resolution upsampling).
#   python tools/test.py correspondence/configs/zero_shot/dift_sd21-up1-t261-ens8_768px_spair71k.py
_base_ = [
    '../_base_/models/dift_sd21.py',
    '../_base_/datasets/spair71k_test.py',
    '../_base_/default_runtime.py',
]
test_pipeline = _base_.input_pipeline  # the recipe's input frame (its model base)
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
# DIFT's protocol (original pixels, <=, per image and per point) first; SD-DINO's alongside.
test_evaluator = dict(type='PCKMetric', presets=['dift', 'sd_dino'], alphas=(0.1, ))
