# DMD v1's regression pairs: (noise, label, the teacher's 18-step Heun image from that noise).
# `pairs` is read by tools/build_dmd_pairs.py, so the training config itself builds them:
#   python tools/build_dmd_pairs.py CONFIG --out data/dmd_pairs/cifar10
# (re-run the same command to continue after a kill; torchrun + --launcher pytorch on GPUs).
# 10 classes x 10,000 pairs as the reference re-implementation, but with distinct noise per
# class (it reuses seeds 0..9999 for every class).
pairs = dict(num_classes=10, per_class=10000, image_shape=(3, 32, 32), num_steps=18, base_seed=0)
pairs_root = 'data/dmd_pairs/cifar10'
train_dataloader = dict(
    batch_size=56,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='DMDPairDataset', root=pairs_root))
