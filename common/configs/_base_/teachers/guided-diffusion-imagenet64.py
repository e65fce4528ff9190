# OpenAI guided-diffusion 64x64 ImageNet model (class-conditional), converted once with
#   python tools/convert/guided_diffusion_to_diffusers.py 64x64_diffusion.pt checkpoints/gd-imagenet64 \
#     --image_size 64 --num_channels 192 --num_res_blocks 3 --attention_resolutions 32,16,8 \
#     --num_head_channels 64 --learn_sigma True --class_cond True --use_scale_shift_norm True \
#     --resblock_updown True --use_new_attention_order True --diffusion_steps 1000 --noise_schedule cosine
teacher = dict(
    type='DiffusionTeacher',
    pretrained='checkpoints/gd-imagenet64',
    layers=['mid_block.resnets.1.conv2'],  # = the original middle_block.2.out_layers.3
    timesteps=[100],
    noise='forward',
    dtype='float32')
