# The standard FID protocol for CIFAR-10 (EDM): 50,000 one-step images, labels random per seed,
# TF-Inception pool features (torch-fidelity's port), statistics of the 50k CIFAR-10 TRAIN images.
# EDM reports the minimum over seed sets 0, 50000, 100000: run tools/test.py three times with
#   --cfg-options test_dataloader.dataset.first_seed=50000 (and 100000).
# The two files come from a connected machine (docs/fid.md):
#   https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/
#       weights-inception-2015-12-05-6726825d.pth
#   https://nvlabs-fi-cdn.nvidia.com/edm/fid-refs/cifar10-32x32.npz
fid_refs = 'data/fid_refs'
test_dataloader = dict(
    batch_size=500,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='GenerationSeedsDataset', num_images=50000, first_seed=0, num_classes=10,
                 labels='random'))
test_evaluator = dict(
    type='GenerationMetric',
    feature_extractor=dict(type='InceptionFeatureExtractor',
                           weights_path=fid_refs + '/weights-inception-2015-12-05-6726825d.pth'),
    reference_stats=fid_refs + '/cifar10-32x32.npz',
    metrics=('FID', 'IS'),
    num_images=50000)
test_cfg = dict(type='TestLoop')
