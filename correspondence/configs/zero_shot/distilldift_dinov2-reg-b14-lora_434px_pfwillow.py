# DistillDIFT student at 434 px on PF-WILLOW: the SPair-71k recipe
# (distilldift_dinov2-reg-b14-lora_434px_spair71k.py) with the dataset base's PCK protocol
# (pfwillow_test.py). Needs the converted student weights: see
# _base_/models/distilldift_dinov2-reg-b14.py.
_base_ = [
    '../_base_/models/distilldift_dinov2-reg-b14.py',
    '../_base_/datasets/pfwillow_test.py',
    '../_base_/default_runtime.py',
]
test_pipeline = _base_.input_pipeline  # the recipe's input frame (its model base)
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
