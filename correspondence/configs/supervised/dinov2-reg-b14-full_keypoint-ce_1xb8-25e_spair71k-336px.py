# Supervised on SPair-71k trn keypoints: DINOv2-B/14-reg student, full fine-tuning: the whole
# backbone trains at lr 1e-5; loss: symmetric CLIP-style cross-entropy over target cells
# (Diffusion Hyperfeatures' loss, temperature 0.07).
# One of the plan's 12 supervised runs ({SD 2.1, DINOv2} x {fine-tune, LoRA, upscaler} x
# {CE, MSE}; README.md of this folder). Not run yet: no result is claimed.
#   bash tools/dist_train.sh correspondence/configs/supervised/dinov2-reg-b14-full_keypoint-ce_1xb8-25e_spair71k-336px.py 1
#   python tools/test.py correspondence/configs/supervised/dinov2-reg-b14-full_keypoint-ce_1xb8-25e_spair71k-336px.py <work_dir>/best_*.pth
_base_ = [
    '../_base_/models/student_dinov2-reg-b14.py',
    '../_base_/datasets/spair71k_trn_336px.py',
    '../_base_/schedules/supervised_adamw-lr1e-4_25e.py',
]
model = dict(
    extractor=dict(mode='full'),
    supervision='keypoints',
    loss=dict(type='KeypointCELoss', temperature=0.07, symmetric=True),
    seed=0)
optim_wrapper = dict(optimizer=dict(lr=1e-5))
