# DSD's cross-attention score alone (the reference's --bias flag), Stable Diffusion 2.1-base, on
# Winoground (2 x 2: text / image / group scores). 10 timesteps (Diffusion-ITM's default grid t =
# 10, 110, ..., 910; DSD reports no Winoground run); itm = d_uncond - d_cond (Diffusion-ITM's
# unconditional normalisation for image retrieval). Only the attention score is reported (the
# scorer computes all three).
#   python tools/test.py image_text_matching/configs/dsd/dsd-attention-only_sd21-base_winoground.py --out work_dirs/dsd-attention-only_winoground.json
# With prompt-learned LoRA weights (a folder written by tools/export_itm_lora.py):
#   python tools/test.py image_text_matching/configs/dsd/dsd-attention-only_sd21-base_winoground.py --cfg-options model.lora_weights=DIR
_base_ = [
    '../_base_/models/dsd_sd21-base.py',
    '../_base_/datasets/winoground.py',
    '../_base_/default_runtime.py',
]
model = dict(
    scorer=dict(num_timesteps=10, itm_unconditional_normalise=True),
    score='attention')
test_evaluator = dict(scores=('attention', ))
