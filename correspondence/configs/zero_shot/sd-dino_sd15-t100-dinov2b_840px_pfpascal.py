# SD-DINO on PF-PASCAL test (299 pairs): the SPair-71k recipe
# (sd-dino_sd15-t100-dinov2b_840px_spair71k.py); PCK at alpha 0.05 / 0.10 / 0.15 of max(W, H) of
# the target image in the 840 padded frame, strict < (pfpascal_test.py).
_base_ = [
    '../_base_/models/sd-dino_sd15-dinov2b.py',
    '../_base_/datasets/pfpascal_test.py',
    '../_base_/default_runtime.py',
]
test_pipeline = _base_.input_pipeline  # the recipe's input frame (its model base)
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
