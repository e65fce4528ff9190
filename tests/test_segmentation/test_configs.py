"""The six BiSeNetV1 configs: recipe values, and weights loading into the context-path ResNet."""
import glob
import os.path as osp
import warnings

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

from common.io import CheckpointLoadError
from common.io.pretrained_init import PartialLoadWarning
from segmentation.datasets import CelebAMaskHQDataset

from .conftest import CONFIG_DIR, STUDENT_PREFIX

STEMS = {
    18: 'bisenetv1_r18-d32{}_2xb8-160k_celebamaskhq-448x448.py',
    50: 'bisenetv1_r50-d32{}_2xb4-160k_celebamaskhq-448x448.py',
}
VARIANTS = ('', '-in1k-pre', '-distilled-pre')


def _config(depth, variant=''):
    return Config.fromfile(osp.join(CONFIG_DIR, STEMS[depth].format(variant)))


def _context_resnet(model):
    return model.backbone.context_path.backbone


def test_the_six_configs_exist():
    names = {osp.basename(p) for p in glob.glob(osp.join(CONFIG_DIR, '*.py'))}
    assert names == {STEMS[d].format(v) for d in STEMS for v in VARIANTS}


@pytest.mark.parametrize('depth', [18, 50])
@pytest.mark.parametrize('variant', VARIANTS)
def test_recipe(depth, variant):
    cfg = _config(depth, variant)
    assert cfg.custom_imports['imports'][:2] == ['common', 'segmentation']
    assert cfg.default_scope == 'mmseg'
    assert cfg.train_dataloader.batch_size == (8 if depth == 18 else 4)
    assert cfg.model.backbone.type == 'BiSeNetV1'
    resnet = cfg.model.backbone.backbone_cfg
    assert resnet.type == 'ResNet' and resnet.depth == depth and not resnet.deep_stem
    heads = [cfg.model.decode_head] + list(cfg.model.auxiliary_head)
    assert [h.num_classes for h in heads] == [19, 19, 19]
    assert cfg.model.data_preprocessor.size == (448, 448)
    # optimiser and schedule
    assert cfg.optim_wrapper.optimizer == dict(type='SGD', lr=0.005, momentum=0.9,
                                               weight_decay=0.0005)
    warmup, poly = cfg.param_scheduler
    assert (warmup.type, warmup.begin, warmup.end) == ('LinearLR', 0, 1000)
    assert (poly.type, poly.power, poly.eta_min, poly.begin, poly.end) == ('PolyLR', 0.9, 1e-4,
                                                                           1000, 160000)
    assert cfg.train_cfg.max_iters == 160000
    # pipelines
    train = {t.type: t for t in cfg.train_dataloader.dataset.pipeline}
    assert train['RandomResize'].scale == (512, 512)
    assert train['RandomResize'].ratio_range == (0.5, 2.0)
    assert train['RandomCrop'].crop_size == (448, 448)
    assert train['RandomCrop'].cat_max_ratio == 0.75
    assert train['RandomFlipSwapLR'].prob == 0.5 and 'RandomFlip' not in train
    assert 'PhotoMetricDistortion' in train
    test = {t.type: t for t in cfg.test_dataloader.dataset.pipeline}
    assert test['Resize'].scale == (512, 512) and test['Resize'].keep_ratio
    for split in ('train', 'val', 'test'):
        dataset = cfg[f'{split}_dataloader'].dataset
        assert dataset.type == 'CelebAMaskHQDataset'
        assert dataset.data_prefix.img_path == f'img_dir/{split}'
    assert cfg.test_evaluator.type == 'FaceParsingMetric'
    assert cfg.default_hooks.visualization.type == 'SegOverlayVisualizationHook'
    # initialisation of the context-path ResNet
    init = resnet.get('init_cfg')
    if variant == '':
        assert init is None
    elif variant == '-in1k-pre':
        assert init == dict(type='Pretrained', checkpoint=f'torchvision://resnet{depth}')
    else:
        assert init.type == 'Pretrained' and init.prefix == STUDENT_PREFIX
        assert init.checkpoint == cfg.distilled_checkpoint


def test_dataset_metainfo():
    meta = CelebAMaskHQDataset.METAINFO
    assert len(meta['classes']) == 19 and meta['classes'][0] == 'background'
    assert len({tuple(c) for c in meta['palette']}) == 19
    with pytest.raises(ValueError, match='reduce_zero_label'):
        CelebAMaskHQDataset(data_root='x', reduce_zero_label=True, lazy_init=True)


def test_dataset_reads_the_converted_split(converted):
    dataset = CelebAMaskHQDataset(
        data_root=converted.root,
        data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'))
    assert len(dataset) == 2
    assert dataset.metainfo['classes'][0] == 'background'
    assert not dataset[0]['reduce_zero_label']


def _build(cfg):
    init_default_scope('mmseg')
    return MODELS.build(cfg.model)


def test_distilled_student_loads_every_backbone_key(distilled_r18):
    cfg = _config(18, '-distilled-pre')
    cfg.model.backbone.backbone_cfg.init_cfg.checkpoint = distilled_r18.path
    model = _build(cfg)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        model.init_weights()
    partial = [str(w.message) for w in caught if issubclass(w.category, PartialLoadWarning)]
    assert partial == []
    loaded = _context_resnet(model).state_dict()
    assert set(loaded) == set(distilled_r18.backbone_state)  # conv1.weight, bn1.*, layer1.0...
    for key, value in distilled_r18.backbone_state.items():
        torch.testing.assert_close(loaded[key], value, msg=key)


def test_placeholder_distilled_checkpoint_fails_clearly():
    model = _build(_config(18, '-distilled-pre'))
    with pytest.raises(CheckpointLoadError, match='SET-ME_distilled-resnet18'):
        model.init_weights()


def test_resnet50_keys_match_mmpretrain_and_torchvision():
    from mmpretrain.models import ResNet
    from torchvision.models import resnet50
    init_default_scope('mmseg')
    ours = MODELS.build(_config(50).model.backbone.backbone_cfg).state_dict()
    student = ResNet(depth=50).state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {
        k: tuple(v.shape) for k, v in student.items()}
    imagenet = resnet50().state_dict()
    assert set(imagenet) - set(ours) == {'fc.weight', 'fc.bias'}
    assert set(ours) - set(imagenet) == set()
