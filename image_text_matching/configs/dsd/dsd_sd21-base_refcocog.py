# DSD zero-shot (no prompt learning), Stable Diffusion 2.1-base, on RefCOCOg (text retrieval
# among 10). 10 timesteps (as the reference README); itm = -d_cond (Diffusion-ITM's text
# retrieval). All three scores are reported; `dsd` (attention + d_uncond - d_cond) is DSD's.
#   python tools/test.py image_text_matching/configs/dsd/dsd_sd21-base_refcocog.py --out work_dirs/dsd_refcocog.json
# With prompt-learned LoRA weights (a folder written by tools/export_itm_lora.py):
#   python tools/test.py image_text_matching/configs/dsd/dsd_sd21-base_refcocog.py --cfg-options model.lora_weights=DIR
_base_ = [
    '../_base_/models/dsd_sd21-base.py',
    '../_base_/datasets/refcocog.py',
    '../_base_/default_runtime.py',
]
model = dict(
    scorer=dict(num_timesteps=10, itm_unconditional_normalise=False),
    score='dsd')
test_evaluator = dict(scores=('dsd', 'attention', 'itm'))
