# Runtime shared by every subtree. Each subtree's own default_runtime adds its default_scope,
# its custom_imports and its visualization hook.
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    # torch/numpy/random generator states in every checkpoint, restored on --resume, so a resumed
    # run continues exactly as an uninterrupted one (common/engine/rng_state_hook.py)
    rng_state=dict(type='RNGStateHook'),
)
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),  # tools/train.py switches to gloo when there is no GPU
)
vis_backends = [dict(type='LocalVisBackend')]
log_processor = dict(by_epoch=True)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)
