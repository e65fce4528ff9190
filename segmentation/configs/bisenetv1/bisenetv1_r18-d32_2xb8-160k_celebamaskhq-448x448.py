# BiSeNetV1-R18 face parsing on CelebAMask-HQ, trained from scratch (the baseline of the
# RepFusion-style comparison): 2 GPUs x 8 images, 448x448 crops, 160k iterations.
_base_ = [
    '../_base_/models/bisenetv1_r18-d32.py',
    '../_base_/datasets/celebamaskhq_448x448.py',
    '../_base_/schedules/schedule_160k.py',
    '../_base_/default_runtime.py',
]
crop_size = (448, 448)
data_preprocessor = dict(size=crop_size)
model = dict(data_preprocessor=data_preprocessor)
train_dataloader = dict(batch_size=8)  # per GPU
