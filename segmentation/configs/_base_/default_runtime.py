# Runtime shared by the face-parsing configs (mmseg 1.x scope). No shared runtime exists under
# common/configs/_base_/, so it lives here.
default_scope = 'mmseg'
# `common` first: it installs the mmcv-lite op stand-in and the safe checkpoint loader that mmseg
# and the `Pretrained` initializer rely on; `segmentation` registers the dataset, the
# left/right-aware flip and the face-parsing metric.
custom_imports = dict(imports=['common', 'segmentation'], allow_failed_imports=False)
env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
