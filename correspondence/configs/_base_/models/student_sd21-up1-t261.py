# A trainable Stable Diffusion 2.1 feature extractor in DIFT's setting (up_blocks.1, t=261, one
# seeded noise draw, prompt 'a photo of a {category}'): rank-8 LoRA on the UNet attention's
# to_q / to_v, only the LoRA factors train (the VAE and text encoder stay frozen and outside the
# checkpoint). Configs switch `model.extractor.mode` to 'full' or 'upscaler'. Its frame:
# _base_/datasets/spair71k_trn_512px.py.
model = dict(
    type='CorrespondenceDistiller',
    extractor=dict(
        type='DiffusionStudent',
        teacher=dict(type='DiffusionTeacher', pretrained='stabilityai/stable-diffusion-2-1',
                     layers=['up_blocks.1'], timesteps=[261], noise='forward', seed=0),
        prompt_template='a photo of a {category}',
        mode='lora', lora=dict(rank=8, alpha=8, targets=('to_q', 'to_v'), dropout=0.0)),
    matcher=dict(type='SoftArgmaxMatcher', window=5, beta=0.02, mask='inf'),
    data_preprocessor=dict(type='PairDataPreprocessor'))
