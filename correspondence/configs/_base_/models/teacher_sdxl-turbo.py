# DistillDIFT's diffusion teacher: SDXL-Turbo at 980 px (a 122 x 122 latent; up_blocks.0 runs at
# 31 x 31, the DINOv2 student's grid at 434 px), the output of up_blocks.0's first transformer
# block stack (after its first resnet: 'up_blocks.0.attentions.0', 1280 channels), averaged over
# t = 51, 101, 151, 201 (one noise draw each, seeded), prompt 'a photo of a {category}'. Unlike the
# release, SDXL's added conditioning (pooled text embeds, time ids) is applied.
teacher_sdxl_turbo = dict(
    type='DiffusionExtractor',
    teacher=dict(type='DiffusionTeacher', pretrained='stabilityai/sdxl-turbo',
                 layers=['up_blocks.0.attentions.0'], timesteps=[51, 101, 151, 201],
                 noise='forward', seed=0, dtype='float16',
                 # deterministic (seeded noise), so its features are cached after the first
                 # epoch: 4 x 1280 x 31 x 31 float32 = 20 MB per image (SPair-71k: ~36 GB)
                 cache_dir='work_dirs/teacher_cache/sdxl-turbo'),
    prompt_template='a photo of a {category}',
    combine='mean')
# the teacher as the distiller sees it (`model = dict(teacher=teacher_sd)` in a config): the
# training frame resized to 980 px for SDXL-Turbo
teacher_sd = dict(type='FusedExtractor', extractors=[teacher_sdxl_turbo], input_sizes=[980])
