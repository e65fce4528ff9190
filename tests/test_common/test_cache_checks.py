"""The start-up check that warns when a teacher feature cache meets random augmentation."""
import pytest
from mmengine.config import Config

from common.teachers import (FeatureCacheNeverHitsWarning, random_augmentations_with_cache,
                             warn_if_cache_never_hits)
from common.teachers.cache_checks import is_random_transform

CIFAR_CFG = ('classification_distill/configs/repfusion_cifar10/'
             'repfusion-fixed-t100_resnet18_1xb128-200e_cifar10.py')


@pytest.fixture
def cifar_cfg():
    return Config.fromfile(CIFAR_CFG)


def test_shipped_cifar_config_with_cache_warns(cifar_cfg, tmp_path):
    cifar_cfg.merge_from_dict({'model.teacher.cache_dir': str(tmp_path / 'cache'),
                               'model.teacher.seed': 0})
    found = random_augmentations_with_cache(cifar_cfg)
    assert found == ['train_dataloader.dataset.pipeline[0]: RandomCrop',
                     'train_dataloader.dataset.pipeline[1]: RandomFlip']
    with pytest.warns(FeatureCacheNeverHitsWarning, match='never hit') as record:
        message = warn_if_cache_never_hits(cifar_cfg)
    text = str(record[0].message)
    assert 'model.teacher.cache_dir' in text and 'RandomCrop' in text
    assert 'Remove cache_dir' in text and 'deterministic pipeline' in text
    assert message == text


def test_warning_is_logged_through_mmengine(cifar_cfg, tmp_path):
    from mmengine.logging import MMLogger
    cifar_cfg.merge_from_dict({'model.teacher.cache_dir': str(tmp_path / 'c')})
    logger = MMLogger.get_instance('cache_check_test', log_file=str(tmp_path / 'log.txt'),
                                   log_level='INFO')
    with pytest.warns(FeatureCacheNeverHitsWarning):
        warn_if_cache_never_hits(cifar_cfg)  # logs to the current (latest) MMLogger
    for handler in logger.handlers:
        handler.flush()
    log = (tmp_path / 'log.txt').read_text()
    assert 'WARNING' in log and 'will never hit' in log


def test_shipped_cifar_config_without_cache_is_quiet(cifar_cfg, recwarn):
    assert random_augmentations_with_cache(cifar_cfg) == []
    assert warn_if_cache_never_hits(cifar_cfg) is None
    assert not [w for w in recwarn if issubclass(w.category, FeatureCacheNeverHitsWarning)]


def test_cache_with_deterministic_pipeline_is_quiet(cifar_cfg, recwarn, tmp_path):
    cifar_cfg.merge_from_dict({'model.teacher.cache_dir': str(tmp_path / 'cache')})
    cifar_cfg.train_dataloader.dataset.pipeline = [dict(type='PackInputs')]
    assert random_augmentations_with_cache(cifar_cfg) == []
    assert warn_if_cache_never_hits(cifar_cfg) is None
    assert not [w for w in recwarn if issubclass(w.category, FeatureCacheNeverHitsWarning)]


def test_nested_datasets_wrappers_and_batch_augments_are_searched():
    cfg = Config(dict(
        model=dict(type='FeatureDistiller',
                   teachers=[dict(type='DiffusionTeacher', cache_dir='/c')],
                   data_preprocessor=dict(batch_augments=dict(augments=[
                       dict(type='Mixup', alpha=0.8)])),
                   train_cfg=dict(augments=[dict(type='CutMix', alpha=1.0)])),
        train_dataloader=dict(dataset=dict(type='RepeatDataset', times=2, dataset=dict(
            type='ConcatDataset', datasets=[
                dict(type='A', pipeline=[dict(type='LoadImageFromFile'),
                                         dict(type='RandomApply', transforms=[
                                             dict(type='ColorJitter', brightness=0.4)])]),
                dict(type='B', pipeline=[dict(type='Resize', scale=32),
                                         dict(type='Solarize', thr=128, prob=0.5),
                                         dict(type='torchvision/RandomResizedCrop', size=32)]),
            ])))))
    found = random_augmentations_with_cache(cfg)
    assert found == [
        'train_dataloader.dataset.dataset.datasets[0].pipeline[1]: RandomApply',
        'train_dataloader.dataset.dataset.datasets[0].pipeline[1].transforms[0]: ColorJitter',
        'train_dataloader.dataset.dataset.datasets[1].pipeline[1]: Solarize',
        'train_dataloader.dataset.dataset.datasets[1].pipeline[2]: torchvision/RandomResizedCrop',
        'model.data_preprocessor.batch_augments.augments[0]: Mixup',
        'model.train_cfg.augments[0]: CutMix',
    ]


@pytest.mark.parametrize('transform,random', [
    (dict(type='RandomCrop', crop_size=32), True),
    (dict(type='RandAugment', policies='timm_increasing'), True),
    (dict(type='PhotoMetricDistortion'), True),
    (dict(type='Brightness', magnitude=0.5, prob=0.5), True),
    (dict(type='Brightness', magnitude=0.5, prob=1.0), False),
    (dict(type='Resize', scale=32), False),
    (dict(type='CenterCrop', crop_size=28), False),
    (dict(type='PackInputs'), False),
])
def test_is_random_transform(transform, random):
    assert is_random_transform(transform) is random
