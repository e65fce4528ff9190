# DistillDIFT student at 434 px on CUB-200-2011 (DistillDIFT's 1000 seeded test pairs): the
# SPair-71k recipe (distilldift_dinov2-reg-b14-lora_434px_spair71k.py) with the dataset base's
# PCK protocol (cub_test.py). Needs the converted student weights: see
# _base_/models/distilldift_dinov2-reg-b14.py.
_base_ = [
    '../_base_/models/distilldift_dinov2-reg-b14.py',
    '../_base_/datasets/cub_test.py',
    '../_base_/default_runtime.py',
]
test_pipeline = [
    dict(type='LoadImagePair'),
    dict(type='ResizePair', frame='stretched', size=434),
    dict(type='PackPair'),
]
test_dataloader = dict(batch_size=1, dataset=dict(pipeline=test_pipeline))
