# DIFT (Tang et al., NeurIPS'23; Tsingularity/dift eval_spair.py): Stable Diffusion 2.1
# up_blocks.1 at t=261, 8 noise draws averaged, prompt 'a photo of a {category}' (SPair's raw
# folder names, e.g. 'a photo of a pottedplant'), cosine hard argmax.
# Difference from DIFT, documented: DIFT upsamples both feature maps bilinearly to the original
# image size and takes the argmax over every pixel; ArgmaxMatcher takes it over the 48 x 48 grid
# (768 px / 16) and returns the winning cell's centre mapped to pixels, so predictions are
# quantised to one cell (16 px of the 768 frame). The source descriptor is read bilinearly at
# the keypoint in both. KernelSoftArgmaxMatcher is the sub-cell alternative (not DIFT's).
_base_ = ['../../../../common/configs/_base_/teachers/sd-2-1_dift.py']
model = dict(
    type='CorrespondenceModel',
    extractor=dict(
        type='DiffusionExtractor',
        teacher=_base_.teacher,
        layer='up_blocks.1',
        timestep=261,
        prompt_template='a photo of a {category}'),
    matcher=dict(type='ArgmaxMatcher'),
    data_preprocessor=dict(type='PairDataPreprocessor'))
# The recipe's model input (stretched to 768 x 768 with bicubic resampling (PIL's default in DIFT)); test configs put it in their pipeline:
#   test_pipeline = _base_.input_pipeline
input_pipeline = [
    dict(type='LoadImagePair'),
    dict(type='ResizePair', frame='stretched', size=768, resample='bicubic'),
    dict(type='PackPair'),
]
