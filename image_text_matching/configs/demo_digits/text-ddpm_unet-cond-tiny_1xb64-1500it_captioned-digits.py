# Step 1 of the image-text matching demo (`make demo-itm`, tools/demo_itm.py): the offline
# stand-in for Stable Diffusion. A small text-conditioned pixel DDPM (diffusers
# UNet2DConditionModel, conditioned only through cross-attention as Stable Diffusion, on a
# 1-layer CLIPTextModel reading a word-level tokenizer built from the ten captions) trained
# jointly on scikit-learn's digits captioned "a handwritten <word>" (train split, 1,197 images;
# the 8 x 8 originals upsampled to 16 x 16). Exported as <work_dir>/pipeline: unet/,
# text_encoder/, tokenizer/, scheduler/ (no vae/: the scorer treats pixels as latents).
#
#   python tools/train.py \
#       image_text_matching/configs/demo_digits/text-ddpm_unet-cond-tiny_1xb64-1500it_captioned-digits.py \
#       --work-dir work_dirs/demo_itm/text_ddpm
#
# Why 16 x 16 (measured on the shared 2-core machine): a 32 x 32 UNet (16/32/64 channels,
# cross-attention at 8 x 8) trained for 380 iterations (~5 min on idle cores) ignored its
# captions (10-way ITM accuracy 17% on 200 test digits, chance 10%) and made LoRA steps and
# scoring ~4x dearer; this 16 x 16 one reaches 75% after 750 iterations and 83% after 1,000 (60
# test digits, 4 timesteps). A 2-layer width-64 text encoder or a lr of 5e-3 learned slower.
#
# | part         | setting                                                 | why                  |
# |--------------|---------------------------------------------------------|----------------------|
# | UNet         | 16/32 channels, 16 -> 8 px, 1 layer per block, 0.25 M   | fits the budget      |
# |              | cross-attention (+ self-attention, FF) at 8 x 8 only:   | DSD's default layers |
# |              | down_blocks.1, mid_block, up_blocks.0 (4 heads of 8)    | = all of them        |
# | text encoder | CLIPTextModel, 1 layer, width 32, 4 heads, 8 tokens     | trained jointly      |
# | tokenizer    | word level: the captions' 12 words + pad/bos/eos/unk    | no CLIP vocab offline|
# | objective    | epsilon MSE, linear betas, 1000 steps, caption dropout  | "" = no text (ITM's  |
# |              | 0.1                                                     | unconditional term)  |
# | optimiser    | AdamW 2e-3, warm-up 50 it, cosine to 1e-4; EMA 0.995    | as the digits DDPM   |
# | schedule     | 1,500 iterations of 64 (80 epochs)                      | demo budget          |
custom_imports = dict(imports=['common', 'image_text_matching.demo'], allow_failed_imports=False)
# mmpretrain's scope: the digits dataset and PackInputs are mmpretrain's (as the digits DDPM)
default_scope = 'mmpretrain'

captions = [f'a handwritten {w}' for w in
            ('zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine')]
image_size = 16

model = dict(
    type='TextDDPMTrainer',
    unet=dict(
        sample_size=image_size,
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=('DownBlock2D', 'CrossAttnDownBlock2D'),
        up_block_types=('CrossAttnUpBlock2D', 'UpBlock2D'),
        norm_num_groups=8,
        attention_head_dim=8),
    text_encoder=dict(hidden_size=32, intermediate_size=64, num_attention_heads=4,
                      num_hidden_layers=1, projection_dim=32),
    captions=captions,
    model_max_length=8,
    scheduler=dict(num_train_timesteps=1000, beta_schedule='linear'),
    caption_dropout=0.1,
    train_text_encoder=True,
    ema_decay=0.995,
    ema_warmup=True,
    data_preprocessor=dict(type='ImgDataPreprocessor', mean=[127.5] * 3, std=[127.5] * 3))

train_dataloader = dict(
    batch_size=64,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type='CaptionedDigitsDataset', split='train', image_size=image_size, split_seed=0,
        template='a handwritten {}',
        pipeline=[dict(type='PackInputs', algorithm_keys=('caption', ))]))

optim_wrapper = dict(
    type='OptimWrapper', optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.0), clip_grad=None)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', eta_min=1e-4, by_epoch=False, begin=100, end=1500),
]
train_cfg = dict(by_epoch=False, max_iters=1500)
val_cfg = None
val_dataloader = None
val_evaluator = None
test_cfg = None
test_dataloader = None
test_evaluator = None

# runtime: after training, <work_dir>/pipeline (ExportDiffusersPipelineHook; its unconditional
# sample grid is off, tools/demo_itm.py draws captioned samples)
custom_hooks = [dict(type='ExportDiffusersPipelineHook', num_samples=0)]
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=100),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=-1, by_epoch=False, save_last=True),
    sampler_seed=dict(type='DistSamplerSeedHook'))
log_processor = dict(by_epoch=False)
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
