# Runtime of the face-parsing configs (mmseg 1.x scope): the toolkit's shared runtime plus what
# is mmseg's: iteration-based logging and checkpoints (every 16k iterations, the best mIoU kept).
_base_ = ['../../../common/configs/_base_/default_runtime.py']

default_scope = 'mmseg'
# `common` first: it installs the mmcv-lite op stand-in and the safe checkpoint loader that mmseg
# and the `Pretrained` initializer rely on; `segmentation` registers the dataset, the
# left/right-aware flip and the face-parsing metric.
custom_imports = dict(imports=['common', 'segmentation'], allow_failed_imports=False)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=16000, save_best='mIoU',
                    rule='greater', max_keep_ckpts=3),
    # mmseg's SegVisualizationHook, made usable in test-only runs (see segmentation/engine).
    # Off while training; `tools/test.py --show-dir DIR` switches `draw` on and then every test
    # image (interval=1) is saved as a prediction overlay under DIR.
    visualization=dict(type='SegOverlayVisualizationHook', interval=1))
env_cfg = dict(cudnn_benchmark=True)  # fixed 448x448 crops: let cuDNN pick its kernels
visualizer = dict(type='SegLocalVisualizer', vis_backends=_base_.vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
randomness = dict(seed=None)  # mmseg's tools leave the seed random unless asked
