# SD-DINO on PF-PASCAL test (299 pairs): the SPair-71k recipe
# (sd-dino_sd15-t100-dinov2b_840px_spair71k.py); PCK at alpha 0.05 / 0.10 / 0.15 of max(W, H) of
# the target image in the 840 padded frame, strict < (pfpascal_test.py).
_base_ = [
    '../_base_/models/sd-dino_sd15-dinov2b.py',
    '../_base_/datasets/pfpascal_test.py',
    '../_base_/default_runtime.py',
]
test_pipeline = [
    dict(type='LoadImagePair'),
    dict(type='ResizePair', frame='padded', size=840, resample='lanczos'),
    dict(type='PackPair'),
]
test_dataloader = dict(batch_size=1, dataset=dict(pipeline=test_pipeline))
