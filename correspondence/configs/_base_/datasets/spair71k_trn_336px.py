# SPair-71k trn/val/test (see spair71k_trn.py) in DistillDIFT's supervised frame: stretched to
# 336 x 336 (24 x 24 DINOv2/14 cells), 8 pairs per batch.
_base_ = ['./spair71k_trn.py']
train_pipeline = [
    dict(type='LoadImagePair'),
    dict(type='ResizePair', frame='stretched', size=336),
    dict(type='PackPair'),
]
train_dataloader = dict(batch_size=8, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=train_pipeline))
test_dataloader = dict(dataset=dict(pipeline=train_pipeline))
