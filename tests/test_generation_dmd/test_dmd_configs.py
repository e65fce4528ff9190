"""The DMD and DMD2 CIFAR-10 configs: they load, say what the reference notes say, and, with the
teacher replaced by a tiny saved EDM network (8x8, 10 classes) and the datasets by tiny ones,
build through mmengine's Runner (optimizer dict, scheduler dict) and train one iteration with
both updates, then sample a test batch.
"""
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from generation_dmd.networks import save_edm
from tests.test_generation_dmd.test_distiller import tiny_teacher, write_pngs

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = osp.join(REPO, 'generation_dmd', 'configs')
DMD = osp.join(CONFIGS, 'dmd', 'dmd_edm-ddpmpp_7xb56_cifar10-cond.py')
DMD2 = osp.join(CONFIGS, 'dmd2', 'dmd2_edm-ddpmpp_8xb256_cifar10-cond.py')


def test_configs_hold_the_reference_settings():
    dmd, dmd2 = Config.fromfile(DMD), Config.fromfile(DMD2)
    for cfg in (dmd, dmd2):
        assert cfg.model.teacher == dict(type='load_edm',
                                         folder='data/edm/edm-cifar10-32x32-cond-vp')
        assert cfg.model.generator_sigma == 80.0 and cfg.model.dropout == 0.0
        assert (cfg.model.dm_loss.min_step_percent, cfg.model.dm_loss.max_step_percent) == \
            (0.02, 0.98)
        assert cfg.optim_wrapper.constructor == 'DMDOptimWrapperConstructor'
        assert cfg.optim_wrapper.generator.clip_grad.max_norm == 10
        assert cfg.test_dataloader.dataset.num_images == 50000
        assert cfg.test_evaluator.reference_stats == 'data/fid_refs/cifar10-32x32.npz'
        assert any(h.get('type') == 'RNGStateHook' for h in cfg.default_hooks.values())
    # DMD v1: pairs + LPIPS 0.25 at 224, ratio 1, AdamW 5e-5, 7 x 56; pairs built from the config
    assert dmd.model.regression_loss.type == 'LPIPSRegressionLoss'
    assert (dmd.model.regression_loss.loss_weight, dmd.model.regression_loss.resize) == (0.25, 224)
    assert dmd.model.fake_updates_per_generator_update == 1 and dmd.model.gan is None
    assert dmd.optim_wrapper.generator.optimizer == dict(type='AdamW', lr=5e-5,
                                                         weight_decay=0.01, betas=(0.9, 0.999))
    assert dmd.train_dataloader.batch_size == 56 and dmd.auto_scale_lr.base_batch_size == 392
    assert dmd.train_dataloader.dataset.type == 'DMDPairDataset'
    assert dmd.teacher == dmd.model.teacher and dmd.pairs.num_classes == 10
    # DMD2: TTUR 5, GAN 3e-3 / 1e-2, no regression, FastGen's lr / EMA / batch
    assert dmd2.model.fake_updates_per_generator_update == 5 and dmd2.model.regression_loss is None
    assert (dmd2.model.gan.generator_weight, dmd2.model.gan.discriminator_weight) == (3e-3, 1e-2)
    assert dmd2.model.ema_decay == 0.9999 and dmd2.optim_wrapper.fake_score.optimizer.lr == 1e-4
    assert dmd2.train_dataloader.dataset.type == 'mmpretrain.CIFAR10'
    assert dmd2.train_dataloader.dataset.download is False


def tiny_run_cfg(path, tmp_path):
    cfg = Config.fromfile(path)
    net = tiny_teacher()
    teacher = dict(type='load_edm', folder=save_edm(net, str(tmp_path / 'teacher')))
    cfg.teacher = teacher
    cfg.model.teacher = teacher
    loader = dict(batch_size=2, num_workers=0, persistent_workers=False)
    cfg.train_dataloader.update(loader)
    cfg.test_dataloader.update(loader)
    cfg.test_dataloader.dataset.num_images = 4
    cfg.train_cfg.max_iters = 1
    cfg.default_hooks.checkpoint.update(interval=1000, save_last=False)
    cfg.default_hooks.logger.interval = 1
    cfg.work_dir = str(tmp_path / 'work')
    cfg.log_level = 'WARNING'
    cfg.experiment_name = 'tiny_' + osp.basename(path)
    return cfg, net


def run_one_iteration(cfg):
    from mmengine.runner import Runner
    runner = Runner.from_cfg(cfg)
    model = runner.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    runner.train()
    after = model.state_dict()
    moved = {part for part in ('generator', 'fake_score', 'discriminator')
             if any(not torch.equal(before[k], after[k]) for k in before
                    if k.startswith(part + '.'))}
    logged = {k[len('train/'):] for k in runner.message_hub.log_scalars if k.startswith('train/')}
    assert set(runner.param_schedulers) == {'generator', 'fake_score'}
    batch = next(iter(runner.build_dataloader(cfg.test_dataloader)))
    out = model.test_step(batch)
    assert [o['image'].shape for o in out] == [(3, 8, 8)] * 2
    assert [o['class_id'] for o in out] == batch['class_id'].tolist()
    return moved, logged


def test_dmd_config_trains_one_iteration_on_tiny_pairs(tmp_path):
    from generation_dmd.pairs import build_pairs
    cfg, net = tiny_run_cfg(DMD, tmp_path)
    pairs = str(tmp_path / 'pairs')
    build_pairs(net, pairs, num_classes=2, per_class=2, image_shape=(3, 8, 8), batch_size=4,
                num_steps=2, show_progress=False)
    cfg.train_dataloader.dataset.root = pairs
    # LPIPS needs weights from a connected machine (tested in test_losses); L2 stands in here
    cfg.model.regression_loss = dict(type='L2RegressionLoss', loss_weight=0.25)
    moved, logged = run_one_iteration(cfg)
    assert moved == {'generator', 'fake_score'}
    assert {'loss_dm', 'loss_reg', 'loss_fake'} <= logged


def test_dmd2_config_trains_one_iteration_on_tiny_real_images(tmp_path):
    cfg, _ = tiny_run_cfg(DMD2, tmp_path)
    cfg.train_dataloader.dataset = dict(
        type='mmpretrain.CustomDataset', data_root=write_pngs(str(tmp_path / 'real'), n=4),
        pipeline=[dict(type='mmpretrain.LoadImageFromFile'), dict(type='mmpretrain.PackInputs')])
    moved, logged = run_one_iteration(cfg)
    assert moved == {'generator', 'fake_score', 'discriminator'}  # step 0: both updates
    assert {'loss_dm', 'loss_gan_g', 'loss_fake', 'loss_gan_d'} <= logged


def test_unknown_optimizer_key_in_a_config_is_one_paragraph(tmp_path):
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import MODELS
    from generation_dmd.distiller import DMDDistiller
    cfg = Config.fromfile(DMD)
    model = MODELS.build(dict(type='DMDDistiller', teacher=tiny_teacher()))
    assert isinstance(model, DMDDistiller)
    optim = cfg.optim_wrapper.to_dict()
    optim['fakescore'] = optim.pop('fake_score')
    with pytest.raises(ValueError, match=r"missing \['fake_score'\]; unknown \['fakescore'\] "
                                         r"\('fakescore': did you mean 'fake_score'\?\)\. Fix "
                                         r"optim_wrapper in the config\."):
        build_optim_wrapper(model, optim)
