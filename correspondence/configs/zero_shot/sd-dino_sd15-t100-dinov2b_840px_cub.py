# SD-DINO on CUB-200-2011 (DistillDIFT's 1000 seeded test pairs; DistillDIFT's table reports
# it): the SPair-71k recipe (sd-dino_sd15-t100-dinov2b_840px_spair71k.py) with the dataset
# base's PCK protocol (cub_test.py).
_base_ = [
    '../_base_/models/sd-dino_sd15-dinov2b.py',
    '../_base_/datasets/cub_test.py',
    '../_base_/default_runtime.py',
]
test_pipeline = [
    dict(type='LoadImagePair'),
    dict(type='ResizePair', frame='padded', size=840, resample='lanczos'),
    dict(type='PackPair'),
]
test_dataloader = dict(batch_size=1, dataset=dict(pipeline=test_pipeline))
