_base_ = ['../../../common/configs/_base_/default_runtime.py']

default_scope = 'mmpretrain'
custom_imports = dict(imports=['common', 'classification_distill'], allow_failed_imports=False)
default_hooks = dict(visualization=dict(type='VisualizationHook', enable=False))
visualizer = dict(type='UniversalVisualizer', vis_backends=_base_.vis_backends)
