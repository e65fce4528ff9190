# Runtime of the correspondence configs: the toolkit's shared runtime plus what is this subtree's.
# The subtree has no OpenMMLab framework: its datasets, transforms, models, matchers and metrics
# live in mmengine's root registries, so the scope is mmengine's own.
_base_ = ['../../../common/configs/_base_/default_runtime.py']

default_scope = 'mmengine'
# `common` first (safe checkpoint loading, the shared hooks such as RNGStateHook); importing
# `correspondence` registers its datasets, pair transforms, extractors, model and PCK metric.
custom_imports = dict(imports=['common', 'correspondence'], allow_failed_imports=False)
default_hooks = dict(logger=dict(type='LoggerHook', interval=50))
# Zero-shot evaluation builds no optimizer; the shared hooks stay for training (issue #8).
