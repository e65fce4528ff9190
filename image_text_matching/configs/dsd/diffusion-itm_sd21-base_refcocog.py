# Diffusion-ITM alone (the denoising error with the text; Krojer et al., NeurIPS'23), on the same
# timestep grid as the DSD config for comparison, Stable Diffusion 2.1-base, on RefCOCOg (text
# retrieval among 10). 10 timesteps (as the reference README); itm = -d_cond (Diffusion-ITM's
# text retrieval). Only the itm score is reported.
#   python tools/test.py image_text_matching/configs/dsd/diffusion-itm_sd21-base_refcocog.py --out work_dirs/diffusion-itm_refcocog.json
# With prompt-learned LoRA weights (a folder written by tools/export_itm_lora.py):
#   python tools/test.py image_text_matching/configs/dsd/diffusion-itm_sd21-base_refcocog.py --cfg-options model.lora_weights=DIR
_base_ = [
    '../_base_/models/dsd_sd21-base.py',
    '../_base_/datasets/refcocog.py',
    '../_base_/default_runtime.py',
]
model = dict(
    scorer=dict(num_timesteps=10, itm_unconditional_normalise=False),
    score='itm')
test_evaluator = dict(scores=('itm', ))
