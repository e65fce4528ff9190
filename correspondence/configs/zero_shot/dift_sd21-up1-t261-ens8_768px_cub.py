# DIFT on CUB-200-2011 (DistillDIFT's 1000 seeded within-class test pairs, cub_test.py): the
# SPair-71k recipe (dift_sd21-up1-t261-ens8_768px_spair71k.py); PCK@0.1 of the target box in
# original pixels.
_base_ = [
    '../_base_/models/dift_sd21.py',
    '../_base_/datasets/cub_test.py',
    '../_base_/default_runtime.py',
]
test_pipeline = _base_.input_pipeline  # the recipe's input frame (its model base)
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
