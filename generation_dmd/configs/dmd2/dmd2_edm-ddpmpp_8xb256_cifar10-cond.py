# DMD2, CIFAR-10 class-conditional: EDM's DDPM++ teacher distilled into a one-step generator with
# the distribution-matching loss, two time-scale updates (5 fake-score updates per generator
# update) and a GAN on the fake score's bottleneck against real CIFAR-10 images; no pairs, no
# regression. The DMD2 code has no CIFAR-10 recipe: the numbers follow NVIDIA FastGen's DMD2
# CIFAR-10 setting (Apache-2.0; FID 1.99 reproduced there, 2.13 cited as "paper").
#   bash tools/dist_train.sh THIS_CONFIG 8
#   python tools/test.py     THIS_CONFIG work_dirs/<name>/iter_100000.pth
#
# | part            | setting                                            | source                 |
# |-----------------|----------------------------------------------------|------------------------|
# | teacher         | edm-cifar10-32x32-cond-vp (EDMPrecond, DDPM++)     | EDM                    |
# | generator       | teacher copy at sigma 80, dropout 0                | DMD2, FastGen          |
# | DM loss         | Karras index 20..980 of 1000, no CFG               | DMD2 code              |
# | fake score loss | EDM weighting, sigma uniform over the 1000 grid    | DMD2 code              |
# | TTUR            | generator update every 5th step                    | DMD2, FastGen          |
# | GAN             | head on the 8x8 bottleneck (last encoder block);   | DMD2 ImageNet-64; the  |
# |                 | gen 3e-3, disc 1e-2; diffusion GAN (noised inputs) | CIFAR-10 values unknown|
# | optimisers      | AdamW 1e-4, wd 0.01, betas (0.9, 0.999), eps 1e-8, | FastGen (DMD2 ImageNet:|
# |                 | clip 10, both nets, constant                       | 2e-6, 500 warm-up)     |
# | batch           | 8 GPUs x 256 = 2048                                | FastGen (global 2048)  |
# | iterations      | 100k                                               | FastGen                |
# | EMA             | 0.9999, sampled at test time                       | FastGen                |
_base_ = [
    '../_base_/default_runtime.py',
    '../_base_/teachers/edm-cifar10-32x32-cond-vp.py',
    '../_base_/datasets/cifar10-real_train.py',
    '../_base_/datasets/generation-fid50k_cifar10.py',
]

model = dict(
    type='DMDDistiller',
    teacher=_base_.teacher,
    generator_sigma=80.0,
    dm_loss=dict(type='DistributionMatchingLoss', min_step_percent=0.02, max_step_percent=0.98,
                 num_timesteps=1000, real_guidance_scale=1.0),
    fake_score_loss=dict(type='FakeScoreLoss', sigma_sampling='karras_grid', sigma_data=0.5),
    regression_loss=None,
    gan=dict(head=dict(type='BottleneckClassifier', num_groups=32), bottleneck=None,
             generator_weight=3e-3, discriminator_weight=1e-2, diffusion_gan=True,
             diffusion_gan_max_step=1000),
    fake_updates_per_generator_update=5,
    ema_decay=0.9999,
    test_use_ema=True,
    dropout=0.0,
    data_preprocessor=_base_.data_preprocessor)

adamw = dict(type='AdamW', lr=1e-4, weight_decay=0.01, betas=(0.9, 0.999), eps=1e-8)
optim_wrapper = dict(
    constructor='DMDOptimWrapperConstructor',
    generator=dict(type='OptimWrapper', optimizer=adamw, clip_grad=dict(max_norm=10)),
    fake_score=dict(type='OptimWrapper', optimizer=adamw, clip_grad=dict(max_norm=10)))
# constant learning rates, one (no-op) scheduler list per optimizer
param_scheduler = dict(generator=[dict(type='ConstantLR', factor=1.0, by_epoch=False)],
                       fake_score=[dict(type='ConstantLR', factor=1.0, by_epoch=False)])
train_cfg = dict(type='IterBasedTrainLoop', max_iters=100000)
auto_scale_lr = dict(enable=False, base_batch_size=2048)
