# SD-DINO on PF-WILLOW (DistillDIFT's table reports it): the SPair-71k recipe
# (sd-dino_sd15-t100-dinov2b_840px_spair71k.py) with the dataset base's PCK protocol
# (pfwillow_test.py).
_base_ = [
    '../_base_/models/sd-dino_sd15-dinov2b.py',
    '../_base_/datasets/pfwillow_test.py',
    '../_base_/default_runtime.py',
]
test_pipeline = _base_.input_pipeline  # the recipe's input frame (its model base)
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
