# PF-PASCAL test pairs (299 pairs, 20 classes): test_pairs_pf_pascal.csv next to
# PF-dataset-PASCAL/. SD-DINO/GeoAware's protocol: threshold alpha * max(W, H) of the target
# image, in the 840 padded frame, strict <.
_base_ = ['./pairs_test.py']
test_dataloader = dict(
    dataset=dict(type='PFPascalDataset', data_root='data/PF-PASCAL', split='test'))
test_evaluator = dict(
    type='PCKMetric',
    alphas=(0.05, 0.1, 0.15),
    presets=[
        dict(name='pfpascal_image', threshold='image', frame='padded', frame_size=840,
             compare='<', averaging=('point', 'category_mean', 'category_weighted')),
    ])
