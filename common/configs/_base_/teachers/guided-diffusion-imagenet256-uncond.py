# OpenAI guided-diffusion 256x256 ImageNet model, unconditional (256x256_diffusion_uncond.pt),
# RepFusion's ImageNet teacher; converted once with
#   python tools/convert/guided_diffusion_to_diffusers.py 256x256_diffusion_uncond.pt \
#     checkpoints/gd-imagenet256-uncond \
#     --attention_resolutions 32,16,8 --class_cond False --diffusion_steps 1000 --image_size 256 \
#     --learn_sigma True --noise_schedule linear --num_channels 256 --num_head_channels 64 \
#     --num_res_blocks 2 --resblock_updown True --use_fp16 False --use_scale_shift_norm True
teacher = dict(
    type='DiffusionTeacher',
    pretrained='checkpoints/gd-imagenet256-uncond',
    layers=['mid_block.resnets.1.conv2'],  # 1024 ch, 8x8 at 256x256; = middle_block.2.out_layers.3
    timesteps=[100],
    noise='forward',
    dtype='float32')
