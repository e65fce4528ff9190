# Supervised on SPair-71k trn keypoints: Stable Diffusion 2.1 student (DIFT's up_blocks.1 @
# t=261), upscaler (frozen backbone + trainable 2x upscaler head); loss: soft-argmax + MSE
# (DistillDIFT's distilled_s: beta 1000, target jitter 1 cell).
# One of the plan's 12 supervised runs ({SD 2.1, DINOv2} x {fine-tune, LoRA, upscaler} x
# {CE, MSE}; README.md of this folder). Not run yet: no result is claimed.
#   bash tools/dist_train.sh correspondence/configs/supervised/sd21-up1-t261-upscaler_softargmax-mse_1xb4-25e_spair71k-512px.py 1
#   python tools/test.py correspondence/configs/supervised/sd21-up1-t261-upscaler_softargmax-mse_1xb4-25e_spair71k-512px.py <work_dir>/best_*.pth
_base_ = [
    '../_base_/models/student_sd21-up1-t261.py',
    '../_base_/datasets/spair71k_trn_512px.py',
    '../_base_/schedules/supervised_adamw-lr1e-4_25e.py',
]
model = dict(
    extractor=dict(mode='upscaler'),
    supervision='keypoints',
    loss=dict(type='SoftArgmaxMSELoss', beta=1000.0, jitter=1.0),
    seed=0)
