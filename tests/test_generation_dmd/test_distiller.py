"""DMDDistiller on a tiny EDM teacher (SongUNet, 8x8, 10 classes): which parameters each phase
touches, the two time-scale ratio, EMA, the teacher kept out of the state, test-time sampling,
batch errors, the GAN head on every default bottleneck, and resume through mmengine's Runner
ending with the weights of an uninterrupted run.
"""
import os
import os.path as osp
import re

import numpy as np
import pytest
import torch
from mmengine.optim import build_optim_wrapper

from generation_dmd.distiller import DMDBatchError, DMDDistiller
from generation_dmd.gan_head import BottleneckClassifier, default_bottleneck, resolve_bottleneck
from generation_dmd.generator import to_uint8
from generation_dmd.networks import EDMPrecond, save_edm
from generation_dmd.optim import DMDOptimWrapperConstructor

TINY = dict(img_resolution=8, img_channels=3, label_dim=10, model_type='SongUNet',
            model_channels=16, channel_mult=[1], num_blocks=1, attn_resolutions=[],
            dropout=0.13)
CLS_PREPROCESSOR = dict(type='mmpretrain.ClsDataPreprocessor', mean=[127.5] * 3,
                        std=[127.5] * 3, to_rgb=False)


def tiny_teacher(seed=0, **overrides):
    """A tiny EDMPrecond with O(0.1) random weights (EDM zero-initialises its output layers)."""
    torch.manual_seed(seed)
    net = EDMPrecond(**{**TINY, **overrides})
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    return net.eval()


def optim(model, lr=1e-3):
    adam = dict(type='Adam', lr=lr)
    return DMDOptimWrapperConstructor(dict(generator=dict(type='OptimWrapper', optimizer=adam),
                                           fake_score=dict(optimizer=adam)))(model)


def real_batch(n=3, seed=0):
    from mmpretrain.structures import DataSample
    gen = torch.Generator().manual_seed(seed)
    return dict(inputs=[torch.randint(0, 256, (3, 8, 8), generator=gen, dtype=torch.uint8)
                        for _ in range(n)],
                data_samples=[DataSample().set_gt_label(i % 10) for i in range(n)])


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before, module):
    now = module.state_dict()
    return any(not torch.equal(before[k], now[k]) for k in before)


@pytest.fixture(scope='module')
def teacher():
    return tiny_teacher()


# --- structure -----------------------------------------------------------------------------------
def test_teacher_is_frozen_outside_the_state_and_follows_to(teacher):
    model = DMDDistiller(teacher, gan=dict(), ema_decay=0.9,
                         data_preprocessor=CLS_PREPROCESSOR)
    prefixes = {k.split('.')[0] for k in model.state_dict()}
    assert prefixes == {'generator', 'generator_ema', 'fake_score', 'discriminator', 'step',
                        'rng_seed', 'ema_updates'}
    teacher_params = {id(p) for p in model.teacher.parameters()}
    assert not teacher_params & {id(p) for p in model.parameters()}
    assert all(not p.requires_grad for p in model.teacher.parameters())
    # the generator and fake score are copies, the dropout set to the configured 0
    assert model.generator.net is not model.teacher and model.fake_score is not model.teacher
    assert all(b.dropout == 0.0 for b in model.fake_score.model.enc.values()
               if hasattr(b, 'dropout'))
    assert all(b.dropout == 0.13 for b in model.teacher.model.enc.values()
               if hasattr(b, 'dropout'))
    model.train()
    assert not model.teacher.training and not model.generator_ema.training
    model.to(torch.float64)
    assert next(model.teacher.parameters()).dtype == torch.float64
    with pytest.raises(RuntimeError, match=r'no forward\(mode="loss"\).*only through train_step'):
        model(mode='loss')


def test_optimizers_split_generator_from_fake_score_and_discriminator(teacher):
    model = DMDDistiller(teacher, gan=dict(), data_preprocessor=CLS_PREPROCESSOR)
    wrappers = build_optim_wrapper(model, dict(  # through the registry, as the Runner does
        constructor='DMDOptimWrapperConstructor',
        generator=dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-4)),
        fake_score=dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=2e-4))))
    assert [w.optimizer.defaults['lr'] for w in wrappers.values()] == [1e-4, 2e-4]
    ids = {k: {id(p) for g in w.optimizer.param_groups for p in g['params']}
           for k, w in wrappers.items()}
    assert ids['generator'] == {id(p) for p in model.generator.parameters()}
    assert ids['fake_score'] == {id(p) for p in model.fake_score.parameters()} | \
        {id(p) for p in model.discriminator.parameters()}
    with pytest.raises(ValueError, match=r"unknown \['fake'\] \('fake': did you mean "
                                         r"'fake_score'\?\)"):
        build_optim_wrapper(model, dict(constructor='DMDOptimWrapperConstructor',
                                        generator=dict(optimizer=dict(type='Adam')),
                                        fake=dict(optimizer=dict(type='Adam'))))


# --- phases ---------------------------------------------------------------------------------------
def test_each_phase_leaves_gradients_only_on_its_own_parameters(teacher):
    model = DMDDistiller(teacher, gan=dict(), fake_updates_per_generator_update=1,
                         data_preprocessor=CLS_PREPROCESSOR).train()
    wrappers = optim(model)
    parts = dict(generator=list(model.generator.parameters()),
                 fake_score=list(model.fake_score.parameters())
                 + list(model.discriminator.parameters()),
                 teacher=list(model.teacher.parameters()))
    seen = {}

    def spy(name, step):
        def wrapped(*args, **kwargs):  # gradients as they are when the optimizer steps
            seen[name] = {k: sum(p.grad is not None for p in ps) for k, ps in parts.items()}
            return step(*args, **kwargs)
        return wrapped

    for name, wrapper in wrappers.items():
        wrapper.step = spy(name, wrapper.step)
    log = model.train_step(real_batch(), wrappers)
    n_gen, n_fake = len(parts['generator']), len(parts['fake_score'])
    assert seen['generator'] == dict(generator=n_gen, fake_score=0, teacher=0)
    assert seen['fake_score'] == dict(generator=0, fake_score=n_fake, teacher=0)
    assert set(log) == {'loss_dm', 'loss_gan_g', 'dm_grad_norm', 'loss_fake', 'loss_gan_d'}
    assert all(torch.isfinite(v) for v in log.values())
    assert all(p.requires_grad for p in parts['fake_score'])  # un-frozen after the phase


def test_ratio_3_updates_the_generator_on_steps_0_and_3_only(teacher):
    model = DMDDistiller(teacher, gan=dict(), fake_updates_per_generator_update=3,
                         ema_decay=0.5, data_preprocessor=CLS_PREPROCESSOR).train()
    wrappers = optim(model)
    pattern = []
    for step in range(4):
        before = {k: snapshot(getattr(model, k))
                  for k in ('generator', 'fake_score', 'discriminator', 'generator_ema')}
        log = model.train_step(real_batch(seed=step), wrappers)
        pattern.append(tuple(changed(before[k], getattr(model, k)) for k in before))
        assert ('loss_dm' in log) == (step % 3 == 0)
    #                 generator fake  discriminator ema
    assert pattern == [(True, True, True, True), (False, True, True, False),
                       (False, True, True, False), (True, True, True, True)]
    assert int(model.step) == 4 and int(model.ema_updates) == 2


def test_ema_is_the_decayed_average_of_the_generator(teacher):
    model = DMDDistiller(teacher, ema_decay=0.75).train()
    wrappers = optim(model)
    start = snapshot(model.generator_ema)
    model.train_step(dict(class_id=torch.tensor([1, -1])), wrappers)
    new = model.generator.state_dict()
    for key, value in model.generator_ema.state_dict().items():
        torch.testing.assert_close(value, 0.75 * start[key] + 0.25 * new[key])
    # with warm-up the first update uses min(decay, 1/10): mostly the new weights
    warm = DMDDistiller(teacher, ema_decay=0.75, ema_warmup=True).train()
    start = snapshot(warm.generator_ema)
    warm.train_step(dict(class_id=torch.tensor([1, -1])), optim(warm))
    key = 'net.model.map_layer0.weight'
    torch.testing.assert_close(warm.generator_ema.state_dict()[key],
                               0.1 * start[key] + 0.9 * warm.generator.state_dict()[key])


def test_pairs_give_the_regression_loss_and_it_falls(teacher):
    model = DMDDistiller(teacher, regression_loss=dict(type='L2RegressionLoss', loss_weight=1.0),
                         dm_loss=dict(type='DistributionMatchingLoss', loss_weight=0.0)).train()
    wrappers = optim(model, lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    pairs = dict(latent=torch.randn(4, 3, 8, 8, generator=gen),
                 image=torch.rand(4, 3, 8, 8, generator=gen) * 2.4 - 1.2,  # clipped to [-1, 1]
                 class_id=torch.tensor([0, 1, 2, 3]))
    target = pairs['image'].clamp(-1, 1)
    with torch.no_grad():
        first = float(((model.generator(pairs['latent'], pairs['class_id']) - target) ** 2)
                      .mean())
    losses = [float(model.train_step(pairs, wrappers)['loss_reg']) for _ in range(6)]
    assert losses[0] == pytest.approx(first, rel=1e-5)  # G(latent) vs the clipped image
    assert losses[-1] < 0.8 * losses[0]


def test_batch_errors_name_what_is_missing(teacher):
    gan = DMDDistiller(teacher, gan=dict())
    with pytest.raises(DMDBatchError, match=r'GAN \(gan=\.\.\.\) needs real images'):
        gan.train_step(dict(class_id=torch.tensor([1, 2])), optim(gan))
    reg = DMDDistiller(teacher, regression_loss=dict(type='L2RegressionLoss'))
    with pytest.raises(DMDBatchError, match=r'regression_loss needs DMD pairs'):
        reg.train_step(dict(class_id=torch.tensor([1, 2])), optim(reg))
    with pytest.raises(DMDBatchError, match=r'class ids up to 12 for a teacher with 10 classes'):
        reg.parse_batch(dict(class_id=torch.tensor([1, 12])), None)
    with pytest.raises(TypeError, match=r"needs an OptimWrapperDict with keys \['generator', "
                                        r"'fake_score'\]"):
        reg.train_step(dict(class_id=torch.tensor([1])), None)
    with pytest.raises(ValueError, match=r"gan has unknown keys \['generator_weigth'\].*did you "
                                         r"mean 'generator_weight'"):
        DMDDistiller(teacher, gan=dict(generator_weigth=1.0))


def test_non_finite_loss_stops_with_the_step_and_the_loss(teacher):
    model = DMDDistiller(teacher).train()
    with torch.no_grad():
        model.fake_score.model.dec['8x8_aux_conv'].bias.fill_(float('nan'))
    with pytest.raises(RuntimeError, match=r'loss_fake is nan at training step 0 \(not finite\)'):
        model.train_step(dict(class_id=torch.tensor([1, 2])), optim(model))


def test_labels_come_from_the_step_seed(teacher):
    model = DMDDistiller(teacher, seed=5)
    a = model.parse_batch(dict(class_id=torch.tensor([-1, 4, -1])), model.step_generator(7))
    b = model.parse_batch(dict(class_id=torch.tensor([-1, 4, -1])), model.step_generator(7))
    assert torch.equal(a['labels'], b['labels']) and int(a['labels'][1]) == 4
    many = model.parse_batch(dict(class_id=torch.full((400, ), -1)), model.step_generator(8))
    assert set(many['labels'].tolist()) == set(range(10))


# mmengine's wrapper passes DDP's `broadcast_buffers`, which torch now calls deprecated
@pytest.mark.filterwarnings('ignore:`broadcast_buffers` is deprecated:FutureWarning')
def test_separate_ddp_wrapping_trains_exactly_as_the_bare_model(teacher, tmp_path):
    """Under MMSeparateDistributedDataParallel (one gloo process) each trainable part is wrapped
    on its own; every step and the state dict equal the unwrapped model's."""
    import torch.distributed as dist
    from mmengine.model.wrappers import MMSeparateDistributedDataParallel
    from mmengine.runner.checkpoint import get_state_dict
    kwargs = dict(gan=dict(), ema_decay=0.9, fake_updates_per_generator_update=2, seed=3,
                  data_preprocessor=CLS_PREPROCESSOR)
    torch.manual_seed(0)  # the discriminator head's initial weights
    bare_model = DMDDistiller(teacher, **kwargs)
    torch.manual_seed(0)
    model = DMDDistiller(teacher, **kwargs)
    dist.init_process_group('gloo', init_method=f'file://{tmp_path / "store"}', rank=0,
                            world_size=1)
    try:
        wrapped = MMSeparateDistributedDataParallel(model)
        assert type(model.fake_score).__name__ == 'MMDistributedDataParallel'
        wrappers, bare_wrappers = optim(wrapped), optim(bare_model)
        for step in range(3):
            got = wrapped.train_step(real_batch(seed=step), wrappers)
            expected = bare_model.train_step(real_batch(seed=step), bare_wrappers)
            assert got.keys() == expected.keys()
            assert all(torch.equal(got[k], expected[k]) for k in got)
        state, expected = get_state_dict(wrapped.module), bare_model.state_dict()
        assert sorted(state) == sorted(expected)
        assert all(torch.equal(state[k], expected[k]) for k in expected)
        assert len(wrapped.test_step(dict(seed=[1, 2], class_id=[3, 4]))) == 2
    finally:
        dist.destroy_process_group()


# --- sampling ------------------------------------------------------------------------------------
def test_test_step_returns_uint8_images_of_the_ema_generator(teacher):
    model = DMDDistiller(teacher, ema_decay=0.9)
    with torch.no_grad():
        model.generator.net.model.map_layer0.weight.add_(1.0)  # EMA and generator now differ
    out = model.test_step(dict(seed=torch.tensor([3, 11]), class_id=torch.tensor([7, 2])))
    assert [(o['seed'], o['class_id']) for o in out] == [(3, 7), (11, 2)]
    assert out[0]['image'].dtype == torch.uint8 and out[0]['image'].shape == (3, 8, 8)
    expected = to_uint8(model.generator_ema.generate([11], [2]))[0]
    assert torch.equal(out[1]['image'], expected)
    assert not torch.equal(expected, to_uint8(model.generator.generate([11], [2]))[0])
    model.test_use_ema = False
    assert torch.equal(model.val_step(dict(seed=[11], class_id=[2]))[0]['image'],
                       to_uint8(model.generator.generate([11], [2]))[0])
    with pytest.raises(DMDBatchError, match=r'class_id -1 for a class-conditional generator'):
        model.test_step(dict(seed=[0], class_id=[-1]))


# --- GAN head ------------------------------------------------------------------------------------
@pytest.mark.parametrize('size', [1, 2, 4, 8, 16])
def test_bottleneck_classifier_gives_one_logit_per_image_on_small_maps(size):
    head = BottleneckClassifier(in_channels=8, num_groups=32)
    assert head.norm0.num_groups == 4  # capped: a divisor of 8 with >= 2 channels per group
    x = torch.randn(3, 8, size, size, generator=torch.Generator().manual_seed(size))
    logits = head(x)
    assert logits.shape == (3, ) and bool(torch.isfinite(logits).all())
    assert len(set(logits.tolist())) == 3  # depends on the image (GroupNorm not degenerate)


def _tiny_diffusers_denoiser(tmp_path):
    from generation_dmd.adapters import DiffusersDenoiser
    from tests.helpers.tiny_models import save_ddpm_pipeline
    folder = save_ddpm_pipeline(str(tmp_path / 'ddpm'), sample_size=8)
    return DiffusersDenoiser(pretrained=folder)


@pytest.mark.parametrize('kind', ['SongUNet', 'DhariwalUNet', 'diffusers'])
def test_gan_head_reads_each_default_bottleneck(kind, tmp_path):
    if kind == 'diffusers':
        net = _tiny_diffusers_denoiser(tmp_path)
        path, channels = 'unet.mid_block', 64
        with pytest.raises(ValueError, match=r'only takes noise levels in \[0\.0100\d+, '
                                             r'157\.\d+\].*dm_loss draws from \[0\.00323.*Set '
                                             r'sigma_min=0\.0100\d+ ') as err:
            DMDDistiller(net)  # EDM's grid goes below the DDPM's smallest noise level
        # the value the message suggests works
        grid = dict(sigma_min=float(re.search(r'sigma_min=([0-9.]+)', str(err.value)).group(1)),
                    sigma_max=80.0)
        model = DMDDistiller(net, dm_loss=dict(type='DistributionMatchingLoss', **grid),
                             fake_score_loss=dict(type='FakeScoreLoss', **grid), gan=dict())
        assert model.gan['bottleneck'] == path and model.discriminator.in_channels == channels
        head, (path_found, module) = model.discriminator, resolve_bottleneck(model.fake_score)
        labels = None
    else:
        net = tiny_teacher(model_type=kind, attn_resolutions=[]) if kind == 'SongUNet' else \
            tiny_teacher(model_type='DhariwalUNet', attn_resolutions=[], model_channels=16)
        path, channels = 'model.enc.8x8_block0', 16
        model = DMDDistiller(net, gan=dict(), data_preprocessor=CLS_PREPROCESSOR)
        assert model.gan['bottleneck'] == path
        assert model.discriminator.in_channels == channels  # read from the bottleneck
        head, (path_found, module) = model.discriminator, resolve_bottleneck(model.fake_score)
        labels = torch.nn.functional.one_hot(torch.tensor([1, 2]), 10).float()
    assert default_bottleneck(model.fake_score) == path == path_found
    feats = {}
    handle = module.register_forward_hook(lambda m, a, out: feats.setdefault('x', out))
    model.fake_score(torch.randn(2, 3, 8, 8), torch.tensor([1.0, 2.0]), labels)
    handle.remove()
    assert head(feats['x'] if torch.is_tensor(feats['x']) else feats['x'][0]).shape == (2, )


def test_unknown_bottleneck_path_lists_the_nearest_modules(teacher):
    from common.teachers.errors import TeacherConfigError
    with pytest.raises(TeacherConfigError, match=r"Unknown layer 'model\.enc\.8x8_blok0' in the "
                       r"fake score \(gan\.bottleneck\).*Nearest valid module paths: "
                       r"\['model\.enc\.8x8_block0'"):
        DMDDistiller(teacher, gan=dict(bottleneck='model.enc.8x8_blok0'))


# --- resume through mmengine's Runner -----------------------------------------------------------
def write_pngs(folder, n=8):
    """``n`` random 8x8 PNGs in two class folders (mmpretrain's CustomDataset layout)."""
    import cv2
    rng = np.random.default_rng(0)
    for i in range(n):
        sub = osp.join(folder, f'c{i % 2}')
        os.makedirs(sub, exist_ok=True)
        cv2.imwrite(osp.join(sub, f'{i}.png'), rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    return folder


def runner_cfg(teacher_dir, data_dir, work_dir, name, max_iters=4, resume_from=None):
    return dict(
        model=dict(type='DMDDistiller', teacher=dict(type='load_edm', folder=teacher_dir),
                   gan=dict(), fake_updates_per_generator_update=3, ema_decay=0.9,
                   data_preprocessor=CLS_PREPROCESSOR),
        work_dir=work_dir,
        experiment_name=name,
        train_dataloader=dict(
            batch_size=2, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=True),
            dataset=dict(type='mmpretrain.CustomDataset', data_root=data_dir,
                         pipeline=[dict(type='mmpretrain.LoadImageFromFile'),
                                   dict(type='mmpretrain.PackInputs')])),
        optim_wrapper=dict(constructor='DMDOptimWrapperConstructor',
                           generator=dict(type='OptimWrapper',
                                          optimizer=dict(type='AdamW', lr=1e-3),
                                          clip_grad=dict(max_norm=10)),
                           fake_score=dict(type='OptimWrapper',
                                           optimizer=dict(type='AdamW', lr=1e-3))),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=2,
                                           max_keep_ckpts=-1),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[dict(type='RNGStateHook')],
        randomness=dict(seed=0),
        default_scope='mmengine',
        log_level='WARNING',
        load_from=resume_from,
        resume=resume_from is not None)


def test_resumed_run_ends_with_the_uninterrupted_runs_weights(tmp_path):
    from mmengine.runner import Runner
    from common.io import load_checkpoint
    teacher_dir = save_edm(tiny_teacher(), str(tmp_path / 'teacher'))
    data_dir = write_pngs(str(tmp_path / 'real'))
    straight = Runner(**runner_cfg(teacher_dir, data_dir, str(tmp_path / 'a'), 'dmd_straight'))
    straight.train()
    expected = straight.model.state_dict()
    ckpt = load_checkpoint(str(tmp_path / 'a' / 'iter_2.pth'))  # the safe loader
    assert 'rng_state' in ckpt and int(ckpt['state_dict']['step']) == 2
    assert not any(k.startswith('teacher') for k in ckpt['state_dict'])
    assert set(ckpt['optimizer']) == {'generator', 'fake_score'}
    resumed = Runner(**runner_cfg(teacher_dir, data_dir, str(tmp_path / 'b'), 'dmd_resumed',
                                  resume_from=str(tmp_path / 'a' / 'iter_2.pth')))
    resumed.train()
    got = resumed.model.state_dict()
    assert sorted(got) == sorted(expected)
    different = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not different, different[:5]
    # the ratio went on from step 2: one generator update (step 3) after the resume, as in the
    # uninterrupted run (steps 0 and 3); a restarted counter would have updated at step 2
    assert int(got['step']) == 4 and int(got['ema_updates']) == 2
