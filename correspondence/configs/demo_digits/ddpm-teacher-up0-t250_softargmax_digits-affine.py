# The digits DDPM teacher's own features (the teacher of `make demo`, a 0.8M-weight pixel UNet
# trained on the digits' train split) matched zero-shot on the digits demo's affine pairs.
#   python tools/test.py correspondence/configs/demo_digits/ddpm-teacher-up0-t250_softargmax_digits-affine.py
# Layer and timestep by a quick look on 60 pairs of another seed (seed 1; the demo reports seed
# 0), table in correspondence/configs/demo_digits/README.md: the first decoder block
# `up_blocks.0` (64 channels, stride 4: a 16x16 grid on the 64x64 images) at t=250, one
# forward-noised copy with a fixed seed (deterministic).
_base_ = ['../_base_/default_runtime.py', '../_base_/datasets/digits_affine_test.py']

teacher_pipeline = 'work_dirs/demo/teacher/pipeline'
model = dict(
    type='CorrespondenceModel',
    extractor=dict(
        type='DiffusionExtractor',
        teacher=dict(type='DiffusionTeacher', pretrained=teacher_pipeline, layers=['up_blocks.0'],
                     timesteps=[250], noise='forward', seed=0)),
    # GeoAware-SC's window soft-argmax (5 cells, beta 0.02), -inf outside the window
    matcher=dict(type='SoftArgmaxMatcher', window=5, beta=0.02, mask='inf'),
    data_preprocessor=dict(type='PairDataPreprocessor'))
