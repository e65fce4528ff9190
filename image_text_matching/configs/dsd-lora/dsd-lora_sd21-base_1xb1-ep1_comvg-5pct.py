# DSD attention-based prompt learning on ComVG: LoRA (rank 4) on q/k/v/out of every attention
# layer of the Stable Diffusion 2.1-base UNet (self- and cross-attention, as the released code;
# 32 processors x 4 projections), everything else frozen; per step one question, one random
# timestep and noise shared by its candidates, margin ranking loss (margin 0.1) of the positive
# against the hardest negative on the dsd score (attention + d_uncond - d_cond). The first 5% of
# comvg_train.csv; 1 epoch (the reference README's ComVG example); test on the whole ComVG test
# file with 40 timesteps. Weights in float32 (training); evaluation alone may use float16.
#   bash tools/dist_train.sh image_text_matching/configs/dsd-lora/dsd-lora_sd21-base_1xb1-ep1_comvg-5pct.py 1
#   python tools/test.py image_text_matching/configs/dsd-lora/dsd-lora_sd21-base_1xb1-ep1_comvg-5pct.py "$(cat work_dirs/dsd-lora_sd21-base_1xb1-ep1_comvg-5pct/last_checkpoint)" --out work_dirs/dsd-lora_comvg.json
_base_ = [
    '../_base_/models/dsd_sd21-base.py',
    '../_base_/datasets/comvg_train-5pct.py',
    '../_base_/schedules/dsd-lora_adamw-lr1e-4_constant.py',
]
model = dict(
    scorer=dict(num_timesteps=40, itm_unconditional_normalise=True, dtype='float32'),
    lora=dict(targets='all_attention', rank=4, alpha=None),
    loss=dict(type='MarginRankingLoss', margin=0.1),
    score='dsd',
    gradient_checkpointing=True)
train_cfg = dict(max_epochs=1)
