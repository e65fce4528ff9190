# CUB-200-2011 test pairs: DistillDIFT's protocol (within-class pairs of test images sharing
# visible parts, 1000 drawn with seed 42), threshold alpha * max(w, h) of the target box in
# original pixels, reported per point.
_base_ = ['./pairs_test.py']
test_dataloader = dict(
    dataset=dict(type='CUBPairsDataset', data_root='data/CUB_200_2011', split='test',
                 num_pairs=1000, seed=42))
test_evaluator = dict(type='PCKMetric', presets=['dift'], alphas=(0.1, ), per_category=False)
