# The segmentation demo's dictionary: a TopK sparse autoencoder (k 8, 8 x 48 = 384 latents, AuxK
# on dead latents) on the digits DDPM teacher's decoder output block 3 (up_blocks.1's upsampler:
# 48 ch @ 16 x 16, 256 tokens per 32 x 32 image) at t = 50, one shared seeded noise, tokens of
# unlabelled training digits; then its latents against the labelled test digits' masks.
#   python tools/collect_sae_features.py <this config> --out work_dirs/demo_segmentation/sae_tokens
#   python tools/train_sae.py <this config> --features work_dirs/demo_segmentation/sae_tokens \
#       --work-dir work_dirs/demo_segmentation/sae
#   python tools/analysis/sae_mask_alignment.py <this config> <work_dir>/sae_step<N>.safetensors \
#       --data work_dirs/demo_segmentation/data/digits_11/real/test --num-classes 11 --size 32
custom_imports = dict(imports=['common', 'segmentation'], allow_failed_imports=False)
teacher = dict(type='DiffusionTeacher', pretrained='work_dirs/demo/teacher/pipeline',
               layers=['up_blocks.1.upsamplers.0'], timesteps=[50], noise='forward', seed=0)
sae_features = dict(image_root='work_dirs/demo_segmentation/sae_images', size=32,
                    extensions=('.png', ), num_images=None, seed=0)
sae = dict(type='TopKSAE', d_in=48, d_sae=384, k=8)
sae_train = dict(steps=600, lr=1e-3, images_per_batch=16, seed=0, log_interval=100,
                 eval_fraction=0.05)
