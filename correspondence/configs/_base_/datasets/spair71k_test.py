# SPair-71k test split (12,234 pairs, 18 categories) as extracted from SPair-71k.tar.gz.
_base_ = ['./pairs_test.py']
test_dataloader = dict(
    dataset=dict(type='SPair71kDataset', data_root='data/SPair-71k', split='test'))
# DIFT's numbers (original pixels, <=, per image and per point) and SD-DINO's (840 padded, <,
# category mean and category weighted), side by side; per-category tables in the log.
test_evaluator = dict(type='PCKMetric', presets=['dift', 'sd_dino'], alphas=(0.1, ))
