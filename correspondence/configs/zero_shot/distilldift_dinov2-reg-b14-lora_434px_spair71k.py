# DistillDIFT student on SPair-71k test (Fundel et al., WACV'25; joh-schb/distilldift release
# eval): LoRA-distilled DINOv2-B/14-reg, images stretched to 434 x 434 (NO_PADDING), 31 x 31
# features upsampled to 60 x 60, window soft-argmax 5. No pose alignment (ADAPT_FLIP +
# MUTUAL_NN, the "+ Pose-Align" row): not implemented.
# WEIGHTS: needs the released student converted to a local transformers folder with the LoRA
# merged (see _base_/models/distilldift_dinov2-reg-b14.py); none is bundled, none is faked:
#   python tools/test.py \
#       correspondence/configs/zero_shot/distilldift_dinov2-reg-b14-lora_434px_spair71k.py \
#       --cfg-options model.extractor.extractors.0.pretrained=/path/to/merged-student
_base_ = [
    '../_base_/models/distilldift_dinov2-reg-b14.py',
    '../_base_/datasets/spair71k_test.py',
    '../_base_/default_runtime.py',
]
test_pipeline = _base_.input_pipeline  # the recipe's input frame (its model base)
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
# The release's protocol (840 stretched frame, threshold scaled by 840 / H, <; per point and the
# project page's category mean), with DIFT's and SD-DINO's alongside.
test_evaluator = dict(type='PCKMetric', presets=['distilldift_release', 'dift', 'sd_dino'],
                      alphas=(0.1, ))
