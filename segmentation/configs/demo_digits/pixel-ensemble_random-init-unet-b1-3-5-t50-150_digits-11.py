# Baseline of the segmentation demo: the teacher's architecture with random weights (a
# UNet2DModel built from the teacher's config under seed 0, written by
# tools/demo_segmentation.py), read at the same blocks and timesteps: what the architecture
# alone gives, without diffusion training.
_base_ = ['./pixel-ensemble_ddpm-digits-b1-3-5-t50-150_digits-11.py']
model = dict(backbone=dict(teacher=dict(
    pretrained='work_dirs/demo_segmentation/random_init_unet/pipeline')))
