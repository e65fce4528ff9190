# Unsupervised with a teacher (one of the plan's 4 runs: DINOv2 student {LoRA, fine-tune} x {CE,
# MSE}, README.md of this folder): the DINOv2-B/14-reg student, rank-8 LoRA on q/v, distilled from
# the SDXL-Turbo teacher alone (980 px, up_blocks.0.attentions.0, t = 51-201 averaged) on the
# SPair-71k trn image pairs without keypoints; loss: MSE between the cosine-similarity maps. Not
# run yet: no result is claimed.
#   bash tools/dist_train.sh correspondence/configs/distilldift/unsup_dinov2-reg-b14-lora-r8_sdxl-turbo-teacher-mse_1xb1-10e_spair71k-pairs.py 1
_base_ = [
    '../_base_/models/student_dinov2-reg-b14.py',
    '../_base_/models/teacher_sdxl-turbo.py',
    '../_base_/datasets/spair71k_trn.py',
    '../_base_/schedules/distilldift_adamw-lr1e-4-wd0.05_step5-10e.py',
]
model = dict(
    extractor=dict(mode='lora'),
    teacher=_base_.teacher_sd,
    supervision='teacher',
    sampler=dict(type='PointSampler', method='full'),
    loss=dict(type='SimilarityDistillLoss', kind='mse'),
    seed=0)
