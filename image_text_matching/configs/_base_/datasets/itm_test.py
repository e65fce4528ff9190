# What every image-text matching test set shares: one question per batch (its candidates are
# scored together, with the same noise per timestep), in order, collated as a list of questions
# (pseudo_collate). The metric reports every score kind (dsd, attention, itm), overall and per
# subset: accuracy (= R@1) and R@5 where there are at least 5 candidates, Winoground's text /
# image / group scores for pairwise questions; a tie with the target counts as a failure.
test_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(image_size=512))  # stretched to 512 x 512 (LANCZOS), as the reference
test_evaluator = dict(type='ITMRetrievalMetric', scores=('dsd', 'attention', 'itm'), topk=(1, 5))
test_cfg = dict(type='TestLoop')
