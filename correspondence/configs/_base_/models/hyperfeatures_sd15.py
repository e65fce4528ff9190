# Diffusion Hyperfeatures (Luo et al., NeurIPS'23; diffusion-hyperfeatures/diffusion_hyperfeatures,
# configs/real.yaml and train.yaml): Stable Diffusion 1.5, empty prompt, no guidance; the
# residual-branch output (conv2, before the shortcut add) of all 12 decoder ResnetBlock2Ds,
# features of real images from DDIM inversion (full model: 50 steps, kept at the reference's
# steps 49, 45, ..., 5, 0 = UNet calls at t = -1 (the clean latent), 60, 160, ..., 960), each map
# resized bilinearly to 64 x 64 and projected to 384 channels by its layer's bottleneck block
# (shared across timesteps), summed with softmax weights over the 11 x 12 maps. Images are
# resized to 512 x 512 before SD whatever the loaded size (the reference's extractor does so).
# The aggregation network is trained (a converter for the released aggregation_network.pt:
# tools/convert/hyperfeatures_aggregation.py); the teacher stays frozen and out of checkpoints.
# Differences from the reference, documented: the VAE posterior mean (the reference samples the
# posterior; set teacher latent='sample' and a seed for that), float32 (the reference runs under
# fp16 autocast; dtype='float16' on a GPU is the faster near-equivalent), and argmax on the
# 64 x 64 grid (the reference upsamples both maps to the loaded size, 224 px at test, and takes
# the argmax per pixel; one cell is 3.5 px of the 224 frame).
teacher = dict(
    type='DiffusionTeacher',
    pretrained='stable-diffusion-v1-5/stable-diffusion-v1-5',
    prompt='',
    latent='mean',
    dtype='float32')
model = dict(
    type='CorrespondenceModel',
    extractor=dict(
        type='HyperfeatureExtractor',
        teacher=teacher,
        layers=None,  # every up_blocks.{i}.resnets.{j}.conv2 (12 on SD 1.5)
        noise='ddim_inversion',
        num_inversion_steps=50,
        save_steps=(49, 45, 40, 35, 30, 25, 20, 15, 10, 5, 0),
        input_size='native',  # the teacher's training size: 512 for SD 1.5
        projection_dim=384,
        output_size=64,
        num_norm_groups=32),
    matcher=dict(type='ArgmaxMatcher'),
    data_preprocessor=dict(type='PairDataPreprocessor'))
# The paper's test input (stretched to 224 x 224, "to maintain a fair comparison with DINO
# descriptors"; SD still sees it upsampled to 512); test configs put it in their pipeline:
#   test_pipeline = _base_.input_pipeline
input_pipeline = [
    dict(type='LoadImagePair'),
    dict(type='ResizePair', frame='stretched', size=224),
    dict(type='PackPair'),
]
