# Step 2 of the image-text matching demo (tools/demo_itm.py): DSD zero-shot on the demo's own
# text-conditioned digits DDPM (step 1's pipeline folder). Each held-out digit is one question:
# text retrieval among the ten captions "a handwritten zero" ... "a handwritten nine" (target =
# the digit). All three scores are reported: attention (DSD's cross-attention log-sum-exp),
# itm (Diffusion-ITM's -d_cond) and dsd (attention + d_uncond - d_cond); tools/demo_itm.py adds
# the binary hard-negative accuracy from the same scores (--out dump).
#
#   python tools/test.py \
#       image_text_matching/configs/demo_digits/dsd_text-ddpm-digits_t10_digits-captions10.py \
#       --work-dir work_dirs/demo_itm/before --out work_dirs/demo_itm/before/questions.json
#
# | part      | setting                                                       | why            |
# |-----------|---------------------------------------------------------------|----------------|
# | model     | work_dirs/demo_itm/text_ddpm/pipeline (pixels, no VAE)        | step 1         |
# | layers    | dsd_default: last cross-attention block of down / mid / up    | DSD's default  |
# |           | (down_blocks.1, mid_block, up_blocks.0: 4 attentions, 8 x 8)  |                |
# | timesteps | 10 evenly spaced in [10, 990): 10, 110, ..., 910              | budget (DSD 30)|
# | noise     | common random noise per timestep (seed 0) for all candidates  | DSD / ITM      |
# | reduction | per sample, padding tokens masked                             | our defaults   |
# | batching  | one UNet call per question: 10 x 10 captioned + 10 empty-text | max_batch 110  |
# | questions | the first 200 of the 600 held-out digits (~20 per class)      | demo budget    |
_base_ = [
    '../_base_/models/dsd_sd21-base.py',
    '../_base_/datasets/itm_test.py',
    '../_base_/default_runtime.py',
]
# DSDMatcher (with DSDScorer and the losses), ITMRetrievalMetric, the digits datasets
custom_imports = dict(
    imports=['common', 'image_text_matching.models.matcher', 'image_text_matching.evaluation',
             'image_text_matching.demo'],
    allow_failed_imports=False)

pipeline = 'work_dirs/demo_itm/text_ddpm/pipeline'
model = dict(
    scorer=dict(pretrained=pipeline, num_timesteps=10, max_batch=110, dtype='float32'),
    score='dsd',
    gradient_checkpointing=False)  # CPU: recomputation costs more than the tiny UNet's memory

test_dataloader = dict(
    num_workers=0,
    dataset=dict(_delete_=True, type='DigitsITMDataset', split='test', number=200,
                 image_size=16, template='a handwritten {}'))  # the model's 16 x 16
test_evaluator = dict(scores=('dsd', 'attention', 'itm'), topk=(1, 5))
default_hooks = dict(logger=dict(type='LoggerHook', interval=50))
