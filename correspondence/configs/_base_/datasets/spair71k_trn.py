# SPair-71k for training: the trn split (53,340 pairs, keypoints for supervised runs; distillation
# ignores them), validation on the val split (5,384 pairs) every epoch, test on the test split.
# Images stretched to a square frame (DistillDIFT's NO_PADDING) of `train_size`; configs whose
# student wants another frame replace the three pipelines (see supervised/*sd21*).
_base_ = ['./spair71k_test.py']
train_size = 434  # DINOv2/14: 31 x 31 cells
train_pipeline = [
    dict(type='LoadImagePair'),
    dict(type='ResizePair', frame='stretched', size=train_size),
    dict(type='PackPair'),
]
train_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='pair_collate'),
    dataset=dict(type='SPair71kDataset', data_root='data/SPair-71k', split='trn',
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='pair_collate'),
    dataset=dict(type='SPair71kDataset', data_root='data/SPair-71k', split='val',
                 pipeline=train_pipeline))
# the release's protocol (per point, 840 frame) for model selection; the test keeps the
# subtree's side-by-side presets
val_evaluator = dict(type='PCKMetric', presets=['distilldift_release'], alphas=(0.1, ),
                     per_category=False)
val_cfg = dict(type='ValLoop')
test_dataloader = dict(batch_size=8, dataset=dict(pipeline=train_pipeline))
