# DistillDIFT, weakly supervised (`distilled_ws`): the DINOv2-B/14-reg LoRA student distilled from
# SDXL-Turbo + DINOv2 on the SPair-71k trn image pairs (the pairs only: keypoints unused), full
# point sampling, cross-entropy over target positions from logits at temperature 0.01, AdamW 1e-4
# / wd 0.05, 10 epochs, x0.1 after 5, 4 GPUs x 1 pair. The teacher runs online with the
# category prompt ('a photo of a {category}'); DiffusionTeacher's cache_dir makes epochs 2-10
# read its features from disk (the pairs are resized deterministically).
#   bash tools/dist_train.sh correspondence/configs/distilldift/<this config> 4
# The release's loss: --cfg-options model.loss.kind=reference_ce. Not run yet.
_base_ = [
    '../_base_/models/student_dinov2-reg-b14.py',
    '../_base_/models/teacher_sdxl-turbo-dinov2-reg-b14.py',
    '../_base_/datasets/spair71k_trn.py',
    '../_base_/schedules/distilldift_adamw-lr1e-4-wd0.05_step5-10e.py',
]
model = dict(
    teacher=_base_.teacher_sd_dino,
    supervision='teacher',
    sampler=dict(type='PointSampler', method='full'),
    loss=dict(type='SimilarityDistillLoss', kind='ce', temperature=0.01),
    seed=0)
