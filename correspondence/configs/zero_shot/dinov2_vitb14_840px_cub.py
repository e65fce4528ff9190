# DINOv2-B/14 at 840 px on CUB-200-2011 (DistillDIFT's 1000 seeded test pairs): the SPair-71k
# recipe (dinov2_vitb14_840px_spair71k.py) with the dataset base's PCK protocol (cub_test.py).
_base_ = [
    '../_base_/models/dinov2_vitb14.py',
    '../_base_/datasets/cub_test.py',
    '../_base_/default_runtime.py',
]
test_pipeline = _base_.input_pipeline  # the recipe's input frame (its model base)
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
