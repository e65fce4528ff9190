# Step 1 of the image-text matching demo (`make demo-itm`, tools/demo_itm.py): the offline
# stand-in for Stable Diffusion. A small text-conditioned pixel DDPM (diffusers
# UNet2DConditionModel + a 2-layer CLIPTextModel + a word-level tokenizer built from the ten
# captions) trained jointly on scikit-learn's digits, each captioned "a handwritten <word>"
# (train split, 1,197 images at 32 x 32). Exported as <work_dir>/pipeline: unet/,
# text_encoder/, tokenizer/, scheduler/ (no vae/: the scorer treats pixels as latents).
#
#   python tools/train.py \
#       image_text_matching/configs/demo_digits/text-ddpm_unet-cond-tiny_1xb64-20e_captioned-digits.py \
#       --work-dir work_dirs/demo_itm/text_ddpm
#
# | part         | setting                                                 | why                  |
# |--------------|---------------------------------------------------------|----------------------|
# | UNet         | 16/32/64 channels, 32 -> 16 -> 8 px, 1 layer per block  | ~1.9x the step cost  |
# |              | cross-attention (+ self-attention, FF) at 8 x 8 only:   | of the digits DDPM;  |
# |              | down_blocks.2, mid_block, up_blocks.0 (8 heads of 8)    | DSD's default layers |
# | text encoder | CLIPTextModel, 2 layers, width 64, 4 heads, 8 tokens    | trained jointly      |
# | tokenizer    | word level: the captions' 12 words + pad/bos/eos/unk    | no CLIP vocab offline|
# | objective    | epsilon MSE, linear betas, 1000 steps, caption dropout  | "" = no text (ITM's  |
# |              | 0.1                                                     | unconditional term)  |
# | optimiser    | AdamW 2e-3, warm-up 50 it, cosine to 1e-4; EMA 0.995    | as the digits DDPM   |
# | schedule     | 20 epochs x 19 batches of 64 (380 iterations)           | demo budget          |
custom_imports = dict(imports=['common', 'image_text_matching.demo'], allow_failed_imports=False)
# mmpretrain's scope: the digits dataset and PackInputs are mmpretrain's (as the digits DDPM)
default_scope = 'mmpretrain'

captions = [f'a handwritten {w}' for w in
            ('zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine')]

model = dict(
    type='TextDDPMTrainer',
    unet=dict(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        down_block_types=('DownBlock2D', 'DownBlock2D', 'CrossAttnDownBlock2D'),
        up_block_types=('CrossAttnUpBlock2D', 'UpBlock2D', 'UpBlock2D'),
        norm_num_groups=8,
        attention_head_dim=8),
    text_encoder=dict(hidden_size=64, intermediate_size=128, num_attention_heads=4,
                      num_hidden_layers=2, projection_dim=64),
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
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type='CaptionedDigitsDataset', split='train', image_size=32, split_seed=0,
        template='a handwritten {}',
        pipeline=[dict(type='PackInputs', algorithm_keys=('caption', ))]))

# schedule: 19 iterations an epoch
optim_wrapper = dict(
    type='OptimWrapper', optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.0), clip_grad=None)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', eta_min=1e-4, by_epoch=True, begin=3, end=20,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=20)
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
    logger=dict(type='LoggerHook', interval=19),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=-1, save_last=True),  # at the end only
    sampler_seed=dict(type='DistSamplerSeedHook'))
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
