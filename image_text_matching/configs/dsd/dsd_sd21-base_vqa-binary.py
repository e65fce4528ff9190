# DSD zero-shot (no prompt learning), Stable Diffusion 2.1-base, on VQAv2 binary (image retrieval
# among 10). 200 timesteps (as the reference README); itm = d_uncond - d_cond (Diffusion-ITM's
# unconditional normalisation for image retrieval). All three scores are reported; `dsd`
# (attention + d_uncond - d_cond) is DSD's.
#   python tools/test.py image_text_matching/configs/dsd/dsd_sd21-base_vqa-binary.py --out work_dirs/dsd_vqa-binary.json
# With prompt-learned LoRA weights (a folder written by tools/export_itm_lora.py):
#   python tools/test.py image_text_matching/configs/dsd/dsd_sd21-base_vqa-binary.py --cfg-options model.lora_weights=DIR
_base_ = [
    '../_base_/models/dsd_sd21-base.py',
    '../_base_/datasets/vqa_binary.py',
    '../_base_/default_runtime.py',
]
model = dict(
    scorer=dict(num_timesteps=200, itm_unconditional_normalise=True),
    score='dsd')
test_evaluator = dict(scores=('dsd', 'attention', 'itm'))
