# Diffusion Hyperfeatures, trained (Luo et al., NeurIPS'23; train_hyperfeatures.py, train.yaml):
# the aggregation network (per-layer bottlenecks + softmax mixing weights; SD 1.5 frozen and out
# of the checkpoint) trained on SPair-71k trn keypoints with the symmetric CLIP-style
# cross-entropy (source keypoint descriptors against every target cell and back, logits =
# cosine / 0.07, nearest-cell labels on the 64 x 64 map), AdamW lr 1e-3, no weight decay, 5,000
# iterations of one pair each, validation every 1,000 on SPair-71k val. The one-step variant (the
# clean latent only: one UNet call per image); the full model is
# --cfg-options model.extractor.num_inversion_steps=50 \
#     "model.extractor.save_steps=(49,45,40,35,30,25,20,15,10,5,0)" (50 UNet calls per image).
# Differences: the reference validates on a 360-pair subset of val (we use all of it) and samples
# the VAE posterior (we take its mean). Not run yet: no result is claimed.
#   bash tools/dist_train.sh correspondence/configs/supervised/<this config> 1
_base_ = [
    '../_base_/models/hyperfeatures_sd15.py',
    '../_base_/datasets/spair71k_trn.py',
    '../_base_/default_runtime.py',
]
model = dict(
    type='CorrespondenceDistiller',
    extractor=dict(num_inversion_steps=1, save_steps=(0, )),
    supervision='keypoints',
    loss=dict(type='KeypointCELoss', temperature=0.07, symmetric=True),
    seed=0)
# the reference trains at its loaded resolution 512 (SD sees 512 either way) and tests at 224
train_pipeline = [
    dict(type='LoadImagePair'),
    dict(type='ResizePair', frame='stretched', size=512),
    dict(type='PackPair'),
]
train_dataloader = dict(batch_size=1, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=_base_.input_pipeline))
test_dataloader = dict(dataset=dict(pipeline=_base_.input_pipeline))
val_evaluator = dict(type='PCKMetric', presets=['hyperfeatures', 'hyperfeatures_img'],
                     alphas=(0.1, ), per_category=False)
test_evaluator = dict(type='PCKMetric', presets=['hyperfeatures', 'hyperfeatures_img'],
                      alphas=(0.1, ))
optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.0))
param_scheduler = []
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=5000, val_interval=1000)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=1000,
                                     max_keep_ckpts=3, save_best='hyperfeatures/pck@0.1/per_point',
                                     rule='greater'))
log_processor = dict(by_epoch=False)
