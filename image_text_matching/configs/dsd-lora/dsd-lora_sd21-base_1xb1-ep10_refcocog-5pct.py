# DSD attention-based prompt learning on RefCOCOg: the recipe of the ComVG config (LoRA rank 4
# on every attention projection, margin 0.1 on the dsd score, AdamW 1e-4, batch 1) on the first
# 5% of the questions (4,750, each a sentence against 9 others), 10 epochs (47,500 steps: the
# reference's released checkpoint final-checkpoint-47500); test on the other 90,260 questions
# with 10 timesteps.
#   bash tools/dist_train.sh image_text_matching/configs/dsd-lora/dsd-lora_sd21-base_1xb1-ep10_refcocog-5pct.py 1
#   python tools/test.py image_text_matching/configs/dsd-lora/dsd-lora_sd21-base_1xb1-ep10_refcocog-5pct.py "$(cat work_dirs/dsd-lora_sd21-base_1xb1-ep10_refcocog-5pct/last_checkpoint)" --out work_dirs/dsd-lora_refcocog.json
_base_ = [
    '../_base_/models/dsd_sd21-base.py',
    '../_base_/datasets/refcocog_train-5pct.py',
    '../_base_/schedules/dsd-lora_adamw-lr1e-4_constant.py',
]
model = dict(
    scorer=dict(num_timesteps=10, itm_unconditional_normalise=False, dtype='float32'),
    lora=dict(targets='all_attention', rank=4, alpha=None),
    loss=dict(type='MarginRankingLoss', margin=0.1),
    score='dsd',
    gradient_checkpointing=True)
train_cfg = dict(max_epochs=10)
