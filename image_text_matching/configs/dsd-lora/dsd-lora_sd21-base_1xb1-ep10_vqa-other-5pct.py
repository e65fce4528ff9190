# DSD attention-based prompt learning on VQAv2: the recipe of the ComVG config (LoRA rank 4 on
# every attention projection, margin 0.1 on the dsd score, AdamW 1e-4, batch 1) on the first 5%
# of vqa_text_train.csv (a question + answer against 9 other answers); 10 epochs (our choice, as
# RefCOCOg's; the reference's default is 50 and its VQA epochs are not published); test on
# vqa_text_test.csv with 200 timesteps. The binary split with the trained weights: export them,
# then evaluate the binary config with them.
#   bash tools/dist_train.sh image_text_matching/configs/dsd-lora/dsd-lora_sd21-base_1xb1-ep10_vqa-other-5pct.py 1
#   python tools/export_itm_lora.py image_text_matching/configs/dsd-lora/dsd-lora_sd21-base_1xb1-ep10_vqa-other-5pct.py "$(cat work_dirs/dsd-lora_sd21-base_1xb1-ep10_vqa-other-5pct/last_checkpoint)" work_dirs/dsd-lora_vqa-lora
#   python tools/test.py image_text_matching/configs/dsd/dsd_sd21-base_vqa-binary.py --cfg-options model.lora_weights=work_dirs/dsd-lora_vqa-lora
_base_ = [
    '../_base_/models/dsd_sd21-base.py',
    '../_base_/datasets/vqa_other_train-5pct.py',
    '../_base_/schedules/dsd-lora_adamw-lr1e-4_constant.py',
]
model = dict(
    scorer=dict(num_timesteps=200, itm_unconditional_normalise=False, dtype='float32'),
    lora=dict(targets='all_attention', rank=4, alpha=None),
    loss=dict(type='MarginRankingLoss', margin=0.1),
    score='dsd',
    gradient_checkpointing=True)
train_cfg = dict(max_epochs=10)
