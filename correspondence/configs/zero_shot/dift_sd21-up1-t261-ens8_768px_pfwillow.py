# DIFT on PF-WILLOW (900 pairs): the SPair-71k recipe (dift_sd21-up1-t261-ens8_768px_spair71k.py)
# on PF-WILLOW's test pairs; keypoint-box thresholds (pfwillow_test.py reports DistillDIFT's
# target-keypoint box and the classic source-keypoint box). PF-WILLOW has no categories in
# SPair's sense: the prompt uses the class folder name (e.g. 'a photo of a car(G)').
_base_ = [
    '../_base_/models/dift_sd21.py',
    '../_base_/datasets/pfwillow_test.py',
    '../_base_/default_runtime.py',
]
test_pipeline = _base_.input_pipeline  # the recipe's input frame (its model base)
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
