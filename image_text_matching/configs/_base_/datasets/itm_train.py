# What every few-shot prompt-learning set shares: one question per step (the reference's batch
# size 1), shuffled; "validation" = every 50th training question, at most 100 (the reference has
# no held-out split: it monitors fit on its training questions, 100 batches sampled every 50th).
train_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(image_size=512))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(image_size=512, stride=50, max_questions=100))
val_evaluator = dict(type='ITMRetrievalMetric', scores=('dsd', 'attention', 'itm'), topk=(1, 5))
val_cfg = dict(type='ValLoop')
