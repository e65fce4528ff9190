# The semantic-vs-spatial ("disentangled") pairs built from PASCAL-Part by
# tools/dataset_converters/pascal_part_disentangled.py (mirrored and cross-image pairs; trg_kps are
# the semantic targets). DisentangledMetric judges each prediction against both the semantic and
# the spatial (opposite-side) part; PCKMetric's DIFT protocol on the semantic targets alongside.
_base_ = ['./pairs_test.py']
# (the experiment config imports the reader's and the metric's modules: custom_imports)
test_dataloader = dict(
    dataset=dict(type='DisentangledPairsDataset', data_root='data/pascal-part-disentangled',
                 kinds=('mirrored', 'cross')))
test_evaluator = [
    dict(type='DisentangledMetric', criterion='mask'),
    dict(type='PCKMetric', presets=['dift'], alphas=(0.1, )),
]
