# Step 3 of the image-text matching demo (tools/demo_itm.py): DSD's attention-based prompt
# learning on the demo's digits DDPM. LoRA adapters on every attention projection of the UNet
# (the released DSD code's targets), trained with the margin ranking loss on the dsd score
# (hardest negative caption) on the first 5% of the training digits (59 questions: one digit
# against the ten captions), then tested exactly as step 2 (this config inherits its model and
# test set: same pipeline, timesteps, noise and 200 held-out digits).
#
#   C=image_text_matching/configs/demo_digits/dsd-lora_text-ddpm-digits_1xb1-5e_digits-captions10-5pct.py
#   python tools/train.py $C --work-dir work_dirs/demo_itm/lora
#   python tools/test.py $C work_dirs/demo_itm/lora/epoch_5.pth --work-dir work_dirs/demo_itm/after \
#       --out work_dirs/demo_itm/after/questions.json
#
# | part      | setting                                                       | why            |
# |-----------|---------------------------------------------------------------|----------------|
# | LoRA      | rank 4 on to_q/to_k/to_v/to_out.0 of every attn1 and attn2    | DSD's release  |
# | loss      | margin ranking, margin 0.1, hardest negative, on the dsd score| DSD            |
# | step      | one question (10 candidates), one random t, shared noise      | DSD (batch 1)  |
# | data      | first 5% of the 1,197 training digits = 59 questions          | DSD's few-shot |
# | optimiser | AdamW lr 1e-3 (DSD: 1e-4), wd 1e-2, clip 1.0, constant        | 295 steps here |
# | schedule  | 5 epochs (295 steps), no validation, checkpoint at the end    | demo budget    |
_base_ = [
    './dsd_text-ddpm-digits_t10_digits-captions10.py',
    '../_base_/datasets/itm_train.py',
]

model = dict(
    lora=dict(targets='all_attention', rank=4, alpha=None),
    loss=dict(type='MarginRankingLoss', margin=0.1),
    score='dsd')

train_dataloader = dict(
    num_workers=0,
    persistent_workers=False,
    dataset=dict(_delete_=True, type='DigitsITMDataset', split='train', few_shot=0.05,
                 image_size=16, template='a handwritten {}'))
val_dataloader = None
val_evaluator = None
val_cfg = None

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8),
    clip_grad=dict(max_norm=1.0))
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=True)]
train_cfg = dict(by_epoch=True, max_epochs=5)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=59),
    checkpoint=dict(type='CheckpointHook', interval=-1, save_last=True))
