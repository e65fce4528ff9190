# Runtime of the generation_dmd configs: the toolkit's shared runtime (RNGStateHook included, so a
# resumed run continues exactly) plus what is this subtree's: iteration-based training, logging
# and checkpoints, and DDP that wraps the generator, the fake score and the discriminator apart.
_base_ = ['../../../common/configs/_base_/default_runtime.py']

# No OpenMMLab framework: the distiller, datasets and metric live in mmengine's root registries;
# mmpretrain parts (CIFAR10, ClsDataPreprocessor) are named with their `mmpretrain.` scope.
default_scope = 'mmengine'
# `common` first (safe checkpoint loading, RNGStateHook); then the subtree's registered parts.
custom_imports = dict(
    imports=['common', 'generation_dmd'],
    allow_failed_imports=False)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=100, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=5000, max_keep_ckpts=3,
                    save_last=True))
log_processor = dict(by_epoch=False)
# DMDDistiller trains through its own train_step with two optimizers: under DDP each trainable
# part is wrapped on its own (the frozen teacher is outside the module tree).
model_wrapper_cfg = dict(type='MMSeparateDistributedDataParallel', find_unused_parameters=False)
