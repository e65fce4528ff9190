# DistillDIFT's two teachers fused: SDXL-Turbo (see teacher_sdxl-turbo.py) at 980 px and
# DINOv2-B/14 with registers at 434 px (x_norm_patchtokens, 31 x 31), each L2-normalised over
# its channels, then concatenated. The release normalises its cached [C, H, W] maps over the
# width axis instead (a bug); this is the intended per-cell normalisation.
_base_ = ['./teacher_sdxl-turbo.py']
teacher_dinov2 = dict(type='DINOv2Extractor', pretrained='facebook/dinov2-with-registers-base',
                      layer=-1)
# `model = dict(teacher=teacher_sd_dino)` in a config
teacher_sd_dino = dict(type='FusedExtractor',
                       extractors=[_base_.teacher_sdxl_turbo, teacher_dinov2],
                       input_sizes=[980, 434])
