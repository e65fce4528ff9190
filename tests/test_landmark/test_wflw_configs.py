"""The WFLW configs: what they say, that every model builds, that a distilled student loads."""
import glob
import os.path as osp
import warnings

import pytest
import torch

from .conftest import CONFIG_DIR

CONFIGS = sorted(glob.glob(osp.join(CONFIG_DIR, '*.py')))
REPFUSION = osp.join(CONFIG_DIR, 'td-hm_res50-distilled-pre_2xb64-60e_wflw-256x256.py')


def _load(path):
    from mmengine.config import Config
    return Config.fromfile(path)


def _build_model(cfg):
    from mmengine.registry import init_default_scope
    from mmpose.registry import MODELS
    init_default_scope(cfg.default_scope)
    return MODELS.build(cfg.model)


def test_expected_experiments_exist():
    names = {osp.basename(p) for p in CONFIGS}
    assert {'td-hm_res50_2xb64-60e_wflw-256x256.py',
            'td-hm_res50-distilled-pre_2xb64-60e_wflw-256x256.py',
            'td-hm_hrnetv2-w18_2xb128-60e_wflw-256x256.py'} <= names


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_config_follows_the_reference(path):
    cfg = _load(path)
    assert cfg.custom_imports['imports'][:2] == ['common', 'landmark']
    codec = cfg.model.head.decoder
    assert (codec.type, codec.input_size, codec.heatmap_size, codec.sigma) == \
        ('MSRAHeatmap', (256, 256), (64, 64), 2)
    assert cfg.model.head.out_channels == 98
    train = {t.type: t for t in cfg.train_dataloader.dataset.pipeline}
    assert train['GetBBoxCenterScale'].padding == 1.25
    assert train['RandomFlip'].direction == 'horizontal'
    # 0.x rot_factor 30 / scale_factor 0.25, in mmpose 1.x terms (see the dataset base)
    assert train['RandomBBoxTransform'].rotate_factor == 60
    assert train['RandomBBoxTransform'].scale_factor == (0.75, 1.25)
    assert train['GenerateTarget'].encoder == codec
    for loader in (cfg.val_dataloader, cfg.test_dataloader):
        pack = loader.dataset.pipeline[-1]
        assert pack.type == 'PackPoseInputs' and 'wflw_attributes' in pack.meta_keys
    assert cfg.val_evaluator.type == cfg.test_evaluator.type == 'WFLWNMEMetric'
    assert cfg.optim_wrapper.optimizer == dict(type='Adam', lr=2e-3)
    warmup, steps = cfg.param_scheduler
    assert (warmup.type, warmup.end, warmup.by_epoch) == ('LinearLR', 500, False)
    assert (steps.type, steps.milestones) == ('MultiStepLR', [40, 55])
    assert cfg.train_cfg.max_epochs == 60
    assert cfg.default_hooks.visualization.type == 'PoseVisualizationHook'
    gpus, batch = osp.basename(path).split('_')[-2].split('-')[0].split('xb')
    assert cfg.train_dataloader.batch_size == int(batch)
    assert cfg.auto_scale_lr.base_batch_size == int(gpus) * int(batch)


@pytest.mark.parametrize('name', ['td-hm_res50_2xb64-60e_wflw-256x256.py',
                                  'td-hm_hrnetv2-w18_2xb128-60e_wflw-256x256.py'])
def test_model_builds_and_predicts_98_heatmaps(name):
    cfg = _load(osp.join(CONFIG_DIR, name))  # the other configs only change backbone.init_cfg
    model = _build_model(cfg).eval()
    with torch.no_grad():
        heatmaps = model(torch.zeros(1, 3, 64, 64), None, mode='tensor')
    assert heatmaps.shape == (1, 98, 16, 16)  # a quarter of the input side


def test_distilled_student_fills_every_backbone_weight(distilled_checkpoint):
    from common.io.pretrained_init import PartialLoadWarning
    path, student = distilled_checkpoint
    cfg = _load(REPFUSION)
    assert cfg.model.backbone.init_cfg.prefix == 'student.backbone.'
    assert cfg.model.backbone.init_cfg.checkpoint == cfg.distilled_checkpoint
    cfg.model.backbone.init_cfg.checkpoint = str(path)
    model = _build_model(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter('error', PartialLoadWarning)  # any unmatched key fails the test
        model.init_weights()
    backbone = model.backbone.state_dict()
    assert set(backbone) == set(student)
    for key, value in student.items():
        assert torch.equal(backbone[key], value), key
