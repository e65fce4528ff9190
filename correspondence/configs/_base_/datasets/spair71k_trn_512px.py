# SPair-71k trn/val/test (see spair71k_trn.py) in the SD students' frame: stretched to 512 x 512
# (a 32 x 32 grid at SD's up_blocks.1; DIFT's 768 px would triple the memory of full UNet
# fine-tuning), 4 pairs per batch.
_base_ = ['./spair71k_trn.py']
train_pipeline = [
    dict(type='LoadImagePair'),
    dict(type='ResizePair', frame='stretched', size=512),
    dict(type='PackPair'),
]
train_dataloader = dict(batch_size=4, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=train_pipeline))
test_dataloader = dict(dataset=dict(pipeline=train_pipeline))
