# What every correspondence test set shares: load both images, resize each to the model's frame
# (SD-DINO/GeoAware's input: aspect kept, zero-padded to 840 x 840), pack; one pair per batch,
# in order. Keypoints stay in original pixels: ResizePair records each image's frame and the
# model maps its predictions back; the PCK protocols are the metric's presets.
test_pipeline = [
    dict(type='LoadImagePair'),
    dict(type='ResizePair', frame='padded', size=840),
    dict(type='PackPair'),
]
test_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='pair_collate'),
    dataset=dict(pipeline=test_pipeline))
test_cfg = dict(type='TestLoop')
