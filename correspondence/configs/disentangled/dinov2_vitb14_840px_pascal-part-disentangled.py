# DINOv2-B/14 (last layer, stretched 840 x 840, window soft-argmax 5: the zero-shot
# dinov2_vitb14_840px_spair71k.py recipe) on the semantic-vs-spatial pairs of PASCAL-Part:
# does it land on the same part (semantic) or on the opposite-side part (spatial)?
#   python tools/test.py correspondence/configs/disentangled/dinov2_vitb14_840px_pascal-part-disentangled.py
_base_ = [
    '../_base_/models/dinov2_vitb14.py',
    '../_base_/datasets/pascal_part_disentangled_test.py',
    '../_base_/default_runtime.py',
]
test_pipeline = _base_.input_pipeline  # the recipe's input frame (its model base)
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
# the reader and the metric register in their own modules; import them whatever
# correspondence/__init__.py imports
custom_imports = dict(
    imports=['common', 'correspondence', 'correspondence.datasets.disentangled',
             'correspondence.evaluation.disentangled_metric'],
    allow_failed_imports=False)
