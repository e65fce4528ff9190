# DistillDIFT, unsupervised (`distilled_us`, Fundel et al. WACV'25): the DINOv2-B/14-reg LoRA
# student distilled from SDXL-Turbo + DINOv2 on 12,000 COCO train2017 pairs formed by CLS
# retrieval (min-max normalised DINOv2-reg CLS embeddings, a random one of the 10 nearest), full
# point sampling (every student source cell against every target cell), cross-entropy over target
# positions from logits at temperature 0.001, AdamW 1e-4 / wd 0.05, 10 epochs, x0.1 after 5,
# 4 GPUs x 1 pair. Teacher features are read from shards written once by
#   python tools/precompute_teacher_features.py \
#       correspondence/configs/precompute/sdxl-turbo-t51-201-dinov2-reg-b14_434px_coco-train2017.py \
#       --out work_dirs/teacher_shards/coco-train2017
# then
#   bash tools/dist_train.sh correspondence/configs/distilldift/<this config> 4
# The release's loss (CrossEntropyLoss over the source dimension on softmaxed maps) is
# --cfg-options model.loss.kind=reference_ce. Not run yet: no result is claimed.
_base_ = [
    '../_base_/models/student_dinov2-reg-b14.py',
    '../_base_/datasets/spair71k_trn.py',
    '../_base_/schedules/distilldift_adamw-lr1e-4-wd0.05_step5-10e.py',
]
shards = 'work_dirs/teacher_shards/coco-train2017'
model = dict(
    supervision='teacher',  # features from the shards (no teacher is loaded)
    sampler=dict(type='PointSampler', method='full'),
    loss=dict(type='SimilarityDistillLoss', kind='ce', temperature=0.001),
    seed=0)
train_pipeline = [
    dict(type='LoadImagePair'),
    dict(type='ResizePair', frame='stretched', size=434),  # the shards' frame
    dict(type='LoadTeacherFeatures', shards=shards),
    dict(type='PackPair'),
]
train_dataloader = dict(
    batch_size=1,
    dataset=dict(_delete_=True, type='UnlabeledPairsDataset', shards=shards,
                 pairing='retrieval', top_k=10, num_pairs=12000, seed=0,
                 pipeline=train_pipeline))
