# Diffusion Hyperfeatures, one-step model (Luo et al., NeurIPS'23; configs/train.yaml "Ours -
# One-Step": num_timesteps 1, save_timestep [0]): SD 1.5, one UNet call on the clean latent
# (t = -1 as in the reference's inversion loop), the 12 decoder ResnetBlock2D branches mixed by
# the trained aggregation network, on SPair-71k test (the reference evaluates a 360-pair subset,
# annotations/spair_71k_test-360.json; this config runs the whole test split).
# WEIGHTS: the released g-luo/diffusion-hyperfeatures aggregation_network_one-step.pt, made safe
# and renamed once (nothing is bundled or faked):
#   python tools/convert/legacy_checkpoint.py aggregation_network_one-step.pt \
#       checkpoints/hyperfeatures/one-step-raw.safetensors --trust-this-file
#   python tools/convert/hyperfeatures_aggregation.py \
#       checkpoints/hyperfeatures/one-step-raw.safetensors \
#       checkpoints/hyperfeatures/aggregation_network_one-step.safetensors
#   python tools/test.py \
#       correspondence/configs/zero_shot/hyperfeatures_sd15-one-step_224px_spair71k.py
# Without the file tools/test.py stops naming load_from below. The release nests its weights
# under an 'aggregation_network' entry, which legacy_checkpoint.py must be able to select.
# Check the converted file's printed shape: 12 layers x 1 timestep for this config.
_base_ = [
    '../_base_/models/hyperfeatures_sd15.py',
    '../_base_/datasets/spair71k_test.py',
    '../_base_/default_runtime.py',
]
model = dict(extractor=dict(num_inversion_steps=1, save_steps=(0, )))
load_from = 'checkpoints/hyperfeatures/aggregation_network_one-step.safetensors'
test_pipeline = _base_.input_pipeline  # the recipe's input frame (its model base)
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
# The reference's PCK (original pixels, <=, pooled over keypoints): bbox first, then image.
test_evaluator = dict(type='PCKMetric', presets=['hyperfeatures', 'hyperfeatures_img'],
                      alphas=(0.1, ))
