# Runtime of the image_text_matching configs: the toolkit's shared runtime plus what is this
# subtree's. The subtree has no OpenMMLab framework: its datasets, models and metric live in
# mmengine's root registries, so the scope is mmengine's own.
_base_ = ['../../../common/configs/_base_/default_runtime.py']

default_scope = 'mmengine'
# `common` first (safe checkpoint loading, the shared hooks such as RNGStateHook); importing
# `image_text_matching` registers its datasets, DSDScorer / DSDMatcher, losses and metric.
custom_imports = dict(imports=['common', 'image_text_matching'], allow_failed_imports=False)
default_hooks = dict(logger=dict(type='LoggerHook', interval=50))
