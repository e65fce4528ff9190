# SD-DINO on SPair-71k test (Zhang et al., NeurIPS'23; Junyi42/sd-dino pck_spair_pascal.py with
# --SAMPLE 0, all pairs): SD 1.5 s5/s4/s3 at t=100 with co-PCA 256 + DINOv2-B/14 token layer 11,
# each L2-normalised and concatenated; images aspect-kept and zero-padded to 840 x 840 (LANCZOS);
# hard argmax on the 60 x 60 grid. SD runs at 840 px here, not SD-DINO's 960 (see
# _base_/models/sd-dino_sd15-dinov2b.py). One pair per batch: the co-PCA is fitted per batch.
#   python tools/test.py \
#       correspondence/configs/zero_shot/sd-dino_sd15-t100-dinov2b_840px_spair71k.py
_base_ = [
    '../_base_/models/sd-dino_sd15-dinov2b.py',
    '../_base_/datasets/spair71k_test.py',
    '../_base_/default_runtime.py',
]
test_pipeline = _base_.input_pipeline  # the recipe's input frame (its model base)
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
# SD-DINO's protocol (840 padded, <, category mean and weighted) at its three alphas; DIFT's too.
test_evaluator = dict(type='PCKMetric', presets=['sd_dino', 'dift'], alphas=(0.1, 0.05, 0.01))
