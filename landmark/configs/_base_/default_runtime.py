# Runtime shared by the landmark experiments (mmpose 1.x scope).
default_scope = 'mmpose'

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # evaluated every epoch; keeps the best NME and the latest checkpoint
    checkpoint=dict(
        type='CheckpointHook', interval=10, max_keep_ckpts=1, save_best='NME', rule='less'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    # `tools/test.py CONFIG CKPT --show-dir DIR` enables it and draws the predicted landmarks
    visualization=dict(type='PoseVisualizationHook', enable=False),
)
custom_hooks = [dict(type='SyncBuffersHook')]  # BN buffers agree across GPUs after each epoch

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='PoseLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=True, num_digits=6)
log_level = 'INFO'
load_from = None
resume = False
backend_args = dict(backend='local')
randomness = dict(seed=None, deterministic=False)
