# DistillDIFT student (Fundel et al., WACV'25; joh-schb/distilldift release eval): DINOv2-B/14 with
# registers and rank-8 LoRA on q and v of all 12 blocks, distilled from SDXL-Turbo + DINOv2;
# x_norm_patchtokens (layer=-1) at 434 px (31 x 31 cells), bilinearly upsampled to 60 x 60
# (NUM_PATCHES_PRE 31 -> NUM_PATCHES 60; a one-source FusedExtractor), window soft-argmax 5,
# beta 0.02, -inf masking (mask='zero' is the release's biased multiplicative mask).
#
# WEIGHTS: `pretrained` must be a local transformers DINOv2-with-registers folder (config.json +
# model.safetensors) holding the released student with its LoRA factors merged into the q/v
# projections (W + B @ A). The release ships torch checkpoints of its own module layout; no
# converter to this folder exists in the toolkit yet, and no weights are bundled or faked. The
# path below is the folder name the converter is to write; until then this config fails with
# the extractor's "no such folder" error. Without the student, pretrained=
# 'facebook/dinov2-with-registers-base' evaluates the undistilled backbone in the same setting.
model = dict(
    type='CorrespondenceModel',
    extractor=dict(
        type='FusedExtractor',
        size=(60, 60),
        extractors=[dict(type='DINOv2Extractor',
                         pretrained='checkpoints/distilldift/dinov2-vitb14-reg-lora-merged',
                         layer=-1)]),
    matcher=dict(type='SoftArgmaxMatcher', window=5, beta=0.02, mask='inf'),
    data_preprocessor=dict(type='PairDataPreprocessor'))
# The recipe's model input (stretched to 434 x 434 (the release's NO_PADDING)); test configs put it in their pipeline:
#   test_pipeline = _base_.input_pipeline
input_pipeline = [
    dict(type='LoadImagePair'),
    dict(type='ResizePair', frame='stretched', size=434),
    dict(type='PackPair'),
]
