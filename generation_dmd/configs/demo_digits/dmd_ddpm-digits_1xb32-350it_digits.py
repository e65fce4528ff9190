# DMD (v1) on the digits demo: the digits DDPM teacher (make demo's, unconditional, 32x32)
# distilled into a one-step generator with the distribution-matching loss plus L2 regression on
# the teacher's own (noise, 18-step Heun image) pairs. Run by `make demo-dmd`
# (tools/demo_dmd.py), or by hand:
#   python tools/build_dmd_pairs.py THIS_CONFIG --out work_dirs/demo_dmd/pairs
#   python tools/train.py           THIS_CONFIG --work-dir work_dirs/demo_dmd/dmd
#   python tools/test.py            THIS_CONFIG work_dirs/demo_dmd/dmd/iter_350.pth
# (tools/test.py needs the demo's classifier and reference images, which tools/demo_dmd.py
# writes; its number is a PROXY, see the evaluator below).
#
# | part             | setting                                                   | why                         |
# |------------------|-----------------------------------------------------------|-----------------------------|
# | teacher          | work_dirs/demo/teacher/pipeline via DiffusersDenoiser     | the shared digits teacher   |
# | generator        | teacher copy at sigma 80, dropout 0                       | DMD2/FastGen                |
# | noise grid       | Karras, 1000 points, sigma 0.0101-80                      | the DDPM's trained range    |
# |                  |                                                           | starts at 0.0100013         |
# | DM loss          | indices 20..980 of the grid, normaliser of the paper      | DMD                         |
# | fake score loss  | EDM weighting, uniform over the grid, every step          | DMD (ratio 1)               |
# | regression       | L2 weight 2.5 on 400 teacher pairs (Heun 18 steps)        | LPIPS weights are offline;  |
# |                  |                                                           | weight: README, ablation    |
# | optimisers       | AdamW, generator 1e-4 / fake score 2e-4, wd 0.01, clip 10 | short run: see README       |
# | batch, schedule  | 32, 350 iterations, constant lr                           | demo budget (2 CPU cores)   |
# | EMA              | 0.99 with warm-up, sampled at test time                   | short run                   |
_base_ = ['../_base_/default_runtime.py']

teacher_pipeline = 'work_dirs/demo/teacher/pipeline'
pairs_root = 'work_dirs/demo_dmd/pairs'
classifier = 'work_dirs/demo_dmd/classifier'  # written by tools/demo_dmd.py
reference_images = 'work_dirs/demo_dmd/digits_test_uint8.npy'  # the 600 held-out digits

# `teacher` and `pairs` are read by tools/build_dmd_pairs.py; the teacher is unconditional, so
# the pairs are one "class" of 400 noises, seeds (1 << 48) | index: never the evaluation's
# seeds 0..N-1.
teacher = dict(type='DiffusersDenoiser', pretrained=teacher_pipeline)
pairs = dict(num_classes=1, per_class=400, image_shape=(3, 32, 32), num_steps=18, base_seed=1)
noise_grid = dict(num_timesteps=1000, sigma_min=0.0101, sigma_max=80.0)

model = dict(
    type='DMDDistiller',
    teacher=teacher,
    generator_sigma=80.0,
    dm_loss=dict(type='DistributionMatchingLoss', min_step_percent=0.02, max_step_percent=0.98,
                 **noise_grid),
    fake_score_loss=dict(type='FakeScoreLoss', sigma_sampling='karras_grid', sigma_data=0.5,
                         **noise_grid),
    regression_loss=dict(type='L2RegressionLoss', loss_weight=2.5),
    gan=None,
    fake_updates_per_generator_update=1,
    ema_decay=0.99,
    ema_warmup=True,
    test_use_ema=True,
    dropout=0.0)

train_dataloader = dict(
    batch_size=32,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),  # iterations, not epochs
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='DMDPairDataset', root=pairs_root))

optim_wrapper = dict(
    constructor='DMDOptimWrapperConstructor',
    generator=dict(type='OptimWrapper', clip_grad=dict(max_norm=10),
                   optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.01, betas=(0.9, 0.999))),
    fake_score=dict(type='OptimWrapper', clip_grad=dict(max_norm=10),
                    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=0.01, betas=(0.9, 0.999))))
param_scheduler = dict(generator=[dict(type='ConstantLR', factor=1.0, by_epoch=False)],
                       fake_score=[dict(type='ConstantLR', factor=1.0, by_epoch=False)])
train_cfg = dict(type='IterBasedTrainLoop', max_iters=350)

# A PROXY evaluation (never called FID): 500 one-step images, the penultimate features of the
# demo's digits classifier, statistics of the digits test split.
test_dataloader = dict(
    batch_size=250,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='GenerationSeedsDataset', num_images=500, first_seed=0, num_classes=None))
# (a list: mmengine reads a bare dict with a `metrics` key as an Evaluator config)
test_evaluator = [
    dict(type='GenerationMetric',
         feature_extractor=dict(type='ClassifierFeatureExtractor',
                                model=dict(type='DigitsCNN', width=16, feature_dim=64,
                                           image_size=32),
                                checkpoint=classifier + '/model.safetensors',
                                feature_layer='body',
                                name='digits-classifier:DigitsCNN:penultimate'),
         reference_images=reference_images,
         metrics=('FID', ),
         proxy_note='proxy Fréchet distance in digits classifier features (not FID), '
                    'reference: the digits test split')
]
test_cfg = dict(type='TestLoop')

custom_imports = dict(imports=_base_.custom_imports.imports + ['generation_dmd.demo'],
                      allow_failed_imports=False)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=-1, save_last=True))
