"""The image_text_matching configs: each loads, reads like its table, and its datasets build.

Every evaluation and prompt-learning config (``dsd/``, ``dsd-lora/``) is loaded with mmengine's
``Config.fromfile`` (without its ``custom_imports``: importing the packages is the package
tests' business); the settings the README promises are checked (timesteps per dataset,
Diffusion-ITM's unconditional normalisation for image retrieval only, DSD's optimizer, LoRA
targets, few-shot fraction, checkpoint interval); every dataloader's dataset is built on the fake
releases (``data_root`` and ``image_size`` overridden) and its first question has the shape of
its retrieval kind; the metric builds. Building the model is the model tests' business.
"""
import glob
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.registry import DATASETS, METRICS

from image_text_matching.datasets import ITMDataset  # importing registers the readers
from image_text_matching.evaluation import ITMRetrievalMetric  # and the metric

from . import fake_releases as fake

CONFIG_ROOT = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))),
                       'image_text_matching', 'configs')
CONFIGS = sorted(p for folder in ('dsd', 'dsd-lora')
                 for p in glob.glob(osp.join(CONFIG_ROOT, folder, '*.py')))
RELEASE_OF = dict(ComVGDataset='comvg', RefCOCOgDataset='refcocog', VQABinaryDataset='vqa',
                  VQAOtherDataset='vqa', WinogroundDataset='winoground')
# the reference README's --sampling_time_steps (Winoground: Diffusion-ITM's 10)
TIMESTEPS = dict(comvg=40, refcocog=10, **{'vqa-binary': 200, 'vqa-other': 200}, winoground=10)
IMAGE_RETRIEVAL = ('comvg', 'vqa-binary', 'winoground')


@pytest.fixture(scope='module')
def releases(tmp_path_factory):
    return fake.write_all(str(tmp_path_factory.mktemp('itm_config_releases')))


def dataset_of(name):
    stem = osp.basename(name)[:-3]
    return stem.split('_')[-1].replace('-5pct', '')


def test_the_config_table_is_complete():
    stems = {osp.basename(p)[:-3] for p in CONFIGS}
    for variant in ('dsd', 'dsd-attention-only', 'diffusion-itm'):
        for dataset in TIMESTEPS:
            assert f'{variant}_sd21-base_{dataset}' in stems
    assert {'dsd-lora_sd21-base_1xb1-ep1_comvg-5pct',
            'dsd-lora-cross-kv_sd21-base_1xb1-ep1_comvg-5pct',
            'dsd-lora_sd21-base_1xb1-ep10_refcocog-5pct',
            'dsd-lora_sd21-base_1xb1-ep10_vqa-other-5pct'} <= stems
    assert len(CONFIGS) == 19


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: osp.basename(p)[:-3])
def test_config_loads_and_its_datasets_build(path, releases):
    cfg = Config.fromfile(path, import_custom_modules=False)
    scorer, dataset = cfg.model.scorer, dataset_of(path)
    assert cfg.model.type == 'DSDMatcher' and scorer.type == 'DSDScorer'
    assert scorer.pretrained == 'stabilityai/stable-diffusion-2-1-base'
    assert (scorer.layers, scorer.latent, scorer.reduction, scorer.mask_padding) == \
        ('dsd_default', 'sample', 'per_sample', True)
    assert tuple(scorer.timestep_range) == (10, 990)
    assert scorer.num_timesteps == TIMESTEPS[dataset]
    assert scorer.itm_unconditional_normalise == (dataset in IMAGE_RETRIEVAL)
    assert cfg.default_scope == 'mmengine' and 'image_text_matching' in cfg.custom_imports.imports
    metric = METRICS.build(cfg.test_evaluator)
    assert isinstance(metric, ITMRetrievalMetric) and metric.prefix == 'itm' and metric.topk == (1, 5)
    for split in ('train', 'val', 'test'):
        loader = cfg.get(f'{split}_dataloader')
        if loader is None:
            continue
        assert loader.batch_size == 1 and loader.collate_fn.type == 'pseudo_collate'
        assert loader.dataset.image_size == 512
        release = releases[RELEASE_OF[loader.dataset.type]]
        ds = DATASETS.build(dict(loader.dataset, data_root=release['root'], image_size=16))
        assert isinstance(ds, ITMDataset) and len(ds) > 0, (split, loader.dataset)
        item = ds[0]
        n_images, n_texts = item['images'].shape[0], len(item['texts'])
        assert item['images'].shape[1:] == (3, 16, 16) and item['target'] == 0
        assert {'text': n_images == 1, 'image': n_texts == 1,
                'pairwise': (n_images, n_texts) == (2, 2)}[item['retrieval']]


@pytest.mark.parametrize('path', [p for p in CONFIGS if 'dsd-lora' in p],
                         ids=lambda p: osp.basename(p)[:-3])
def test_prompt_learning_configs_are_dsds_recipe(path):
    cfg = Config.fromfile(path, import_custom_modules=False)
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, tuple(optimizer.betas), optimizer.weight_decay,
            optimizer.eps) == ('AdamW', 1e-4, (0.9, 0.999), 1e-2, 1e-8)
    assert cfg.optim_wrapper.clip_grad == dict(max_norm=1.0)
    assert [s.type for s in cfg.param_scheduler] == ['ConstantLR']
    assert cfg.param_scheduler[0].factor == 1.0
    assert cfg.default_hooks.checkpoint.interval == 2000
    assert cfg.default_hooks.checkpoint.by_epoch is False
    assert cfg.model.lora == dict(targets='cross_kv' if 'cross-kv' in path else 'all_attention',
                                  rank=4, alpha=None)
    assert cfg.model.loss == dict(type='MarginRankingLoss', margin=0.1)
    assert cfg.model.score == 'dsd' and cfg.model.scorer.dtype == 'float32'
    assert cfg.train_dataloader.dataset.few_shot == 0.05
    assert cfg.train_dataloader.dataset.split == 'train' and cfg.val_dataloader.dataset.split == \
        'train' and cfg.test_dataloader.dataset.split == 'test'
    assert cfg.train_dataloader.sampler.shuffle is True
    epochs = int(osp.basename(path).split('-ep')[1].split('_')[0])
    assert cfg.train_cfg.max_epochs == epochs


def test_evaluation_variants_report_their_score():
    for path in CONFIGS:
        if 'dsd-lora' in path:
            continue
        cfg = Config.fromfile(path, import_custom_modules=False)
        variant = osp.basename(path).split('_')[0]
        expected = {'dsd': ('dsd', ('dsd', 'attention', 'itm')),
                    'dsd-attention-only': ('attention', ('attention', )),
                    'diffusion-itm': ('itm', ('itm', ))}[variant]
        assert (cfg.model.score, tuple(cfg.test_evaluator.scores)) == expected
        assert cfg.model.scorer.dtype == 'float16' and 'lora' not in cfg.model
        assert cfg.get('train_dataloader') is None and cfg.get('optim_wrapper') is None
