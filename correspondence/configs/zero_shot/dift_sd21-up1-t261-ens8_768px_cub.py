# DIFT on CUB-200-2011 (DistillDIFT's 1000 seeded within-class test pairs, cub_test.py): the
# SPair-71k recipe (dift_sd21-up1-t261-ens8_768px_spair71k.py); PCK@0.1 of the target box in
# original pixels.
_base_ = [
    '../_base_/models/dift_sd21.py',
    '../_base_/datasets/cub_test.py',
    '../_base_/default_runtime.py',
]
test_pipeline = [
    dict(type='LoadImagePair'),
    dict(type='ResizePair', frame='stretched', size=768, resample='bicubic'),
    dict(type='PackPair'),
]
test_dataloader = dict(batch_size=1, dataset=dict(pipeline=test_pipeline))
