# PF-WILLOW test pairs (900 pairs, 10 keypoints each): test_pairs_pf.csv next to PF-dataset/.
# No object boxes: the threshold is a keypoint box (DistillDIFT: the target keypoints; the
# classic CNNGeometric "pf" procedure: the source keypoints); both are reported.
_base_ = ['./pairs_test.py']
test_dataloader = dict(dataset=dict(type='PFWillowDataset', data_root='data/PF-WILLOW'))
test_evaluator = dict(
    type='PCKMetric',
    alphas=(0.05, 0.1),
    presets=[
        dict(name='pfwillow_trg_kps', threshold='target_kps', frame='original', compare='<=',
             averaging=('point', 'image')),
        dict(name='pfwillow_src_kps', threshold='source_kps', frame='original', compare='<=',
             averaging=('point', 'image')),
    ])
