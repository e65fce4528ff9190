# Runtime of the landmark experiments (mmpose 1.x scope): the toolkit's shared runtime plus what
# is mmpose's.
_base_ = ['../../../common/configs/_base_/default_runtime.py']

default_scope = 'mmpose'
custom_imports = dict(imports=['common', 'landmark'], allow_failed_imports=False)

default_hooks = dict(
    # evaluated every epoch; keeps the best NME and the latest checkpoint
    checkpoint=dict(interval=10, max_keep_ckpts=1, save_best='NME', rule='less'),
    # `tools/test.py CONFIG CKPT --show-dir DIR` enables it and draws the predicted landmarks
    visualization=dict(type='PoseVisualizationHook', enable=False),
)
custom_hooks = [dict(type='SyncBuffersHook')]  # BN buffers agree across GPUs after each epoch

visualizer = dict(type='PoseLocalVisualizer', vis_backends=_base_.vis_backends,
                  name='visualizer')
log_processor = dict(type='LogProcessor', window_size=50, num_digits=6)
backend_args = dict(backend='local')
randomness = dict(seed=None)
