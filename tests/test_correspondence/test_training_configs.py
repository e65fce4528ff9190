"""The training configs (correspondence/configs/supervised/, distilldift/): the plan's 12
supervised runs, the 4 unsupervised-with-teacher runs and DistillDIFT's us/ws settings load,
name only registered types, say what their names say, and, with tiny models in place of the
pretrained ones, run one training step on a fake SPair-71k trn pair through their own pipeline:
a finite loss whose gradients reach the trainable parameters only (no network, no weights)."""
import copy
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import (DATA_SAMPLERS, DATASETS, FUNCTIONS, HOOKS, LOOPS, METRICS, MODELS,
                               OPTIM_WRAPPERS, OPTIMIZERS, PARAM_SCHEDULERS, TRANSFORMS,
                               VISBACKENDS)

import common  # noqa: F401  registers the teachers
import correspondence  # noqa: F401  registers datasets, transforms, models
from correspondence.datasets.transforms import pair_collate
from tests.helpers.tiny_models import save_dinov2_models, save_sd_pipeline

from .fake_releases import write_spair

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG_ROOT = osp.join(REPO_ROOT, 'correspondence', 'configs')
SUPERVISED = sorted(glob.glob(osp.join(CONFIG_ROOT, 'supervised', '*.py')))
DISTILL = sorted(glob.glob(osp.join(CONFIG_ROOT, 'distilldift', '*.py')))
TINY_SIZE = 56


def name(path):
    return osp.basename(path)


def test_the_plan_is_complete():
    """12 supervised runs ({SD 2.1, DINOv2} x {full, LoRA, upscaler} x {CE, MSE}), one trained
    Hyperfeatures config, 4 unsupervised-with-teacher runs and DistillDIFT's us and ws."""
    runs = set()
    for path in SUPERVISED:
        cfg = Config.fromfile(path)
        if cfg.model.extractor.type == 'HyperfeatureExtractor':
            continue
        runs.add((cfg.model.extractor.type, cfg.model.extractor.mode, cfg.model.loss.type))
        assert cfg.model.supervision == 'keypoints'
        assert cfg.train_dataloader.dataset.type == 'SPair71kDataset'
        assert cfg.train_dataloader.dataset.split == 'trn'
    assert runs == {(s, m, loss) for s in ('DINOv2Student', 'DiffusionStudent')
                    for m in ('full', 'lora', 'upscaler')
                    for loss in ('KeypointCELoss', 'SoftArgmaxMSELoss')}
    unsup = [Config.fromfile(p) for p in DISTILL if name(p).startswith('unsup_')]
    assert {(c.model.extractor.mode, c.model.loss.kind) for c in unsup} == {
        (m, k) for m in ('lora', 'full') for k in ('ce', 'mse')}
    kinds = {name(p).split('_')[0] for p in DISTILL}
    assert kinds == {'unsup', 'distilldift-us', 'distilldift-ws'}
    for path in DISTILL:
        cfg = Config.fromfile(path)
        assert cfg.model.supervision == 'teacher'
        assert cfg.model.extractor.type == 'DINOv2Student'


def test_distilldift_settings():
    us, = [Config.fromfile(p) for p in DISTILL if name(p).startswith('distilldift-us')]
    ws, = [Config.fromfile(p) for p in DISTILL if name(p).startswith('distilldift-ws')]
    assert (us.model.loss.kind, us.model.loss.temperature) == ('ce', 0.001)
    assert (ws.model.loss.kind, ws.model.loss.temperature) == ('ce', 0.01)
    data = us.train_dataloader.dataset
    assert (data.type, data.pairing, data.top_k, data.num_pairs) == (
        'UnlabeledPairsDataset', 'retrieval', 10, 12000)
    assert [t['type'] for t in data.pipeline] == ['LoadImagePair', 'ResizePair',
                                                  'LoadTeacherFeatures', 'PackPair']
    assert 'teacher' not in us.model  # the shards hold the teacher's features
    sources = [e['type'] for e in ws.model.teacher.extractors]
    assert sources == ['DiffusionExtractor', 'DINOv2Extractor']
    assert ws.model.teacher.input_sizes == [980, 434]
    assert ws.model.teacher.extractors[0].teacher.timesteps == [51, 101, 151, 201]
    assert ws.model.teacher.extractors[0].combine == 'mean'
    for cfg in (us, ws):
        assert cfg.model.extractor.lora == dict(rank=8, alpha=8, targets=('query', 'value'),
                                                dropout=0.05)
        assert cfg.optim_wrapper.optimizer == dict(type='AdamW', lr=1e-4, weight_decay=0.05)
        assert cfg.train_cfg.max_epochs == 10


# ---------------------------------------------------------------------------- one training step
@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp('training')
    dino = save_dinov2_models(root / 'dino')
    return dict(sd=save_sd_pipeline(str(root / 'sd')),
                sdxl=save_sd_pipeline(str(root / 'sdxl'), xl=True),
                dino_reg=dino['reg'], spair=write_spair(str(root))['root'])


def walk(node):
    if isinstance(node, dict):
        if 'type' in node:
            yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from walk(value)


def shrink(model_cfg, tiny):
    model_cfg = copy.deepcopy(model_cfg)
    for node in walk(model_cfg):
        kind = node['type']
        if kind == 'DiffusionTeacher':
            xl = 'xl' in node['pretrained']
            node.update(pretrained=tiny['sdxl' if xl else 'sd'], dtype='float32',
                        cache_dir=None)
            node['layers'] = [lay.replace('up_blocks.0.attentions', 'up_blocks.1.attentions')
                              for lay in node.get('layers', [])] or node.get('layers')
        elif kind in ('DINOv2Student', 'DINOv2Extractor'):
            node['pretrained'] = tiny['dino_reg']
        elif kind == 'FusedExtractor' and node.get('input_sizes'):
            node['input_sizes'] = [TINY_SIZE] * len(node['input_sizes'])
        elif kind == 'HyperfeatureExtractor':
            node.update(projection_dim=16, output_size=8, num_norm_groups=4)
    return model_cfg


@pytest.mark.parametrize('path', SUPERVISED + DISTILL, ids=name)
def test_one_training_step_on_a_fake_pair(path, tiny):
    cfg = Config.fromfile(path)
    registries = (MODELS, TRANSFORMS, DATASETS, DATA_SAMPLERS, FUNCTIONS, METRICS, HOOKS, LOOPS,
                  OPTIMIZERS, OPTIM_WRAPPERS, PARAM_SCHEDULERS, VISBACKENDS)
    for node in walk(cfg.to_dict()):
        assert any(r.get(node['type']) for r in registries), f'{node["type"]} is not registered'
    model = MODELS.build(shrink(cfg.model.to_dict(), tiny))
    model.train()
    pipeline = copy.deepcopy(cfg.train_dataloader.dataset.pipeline)
    pipeline = [t for t in pipeline if t['type'] != 'LoadTeacherFeatures']
    for t in pipeline:
        if t['type'] == 'ResizePair':
            t['size'] = TINY_SIZE
    dataset = DATASETS.build(dict(type='SPair71kDataset', data_root=tiny['spair'], split='trn',
                                  pipeline=pipeline))
    batch = pair_collate([dataset[0]])
    data = model.data_preprocessor(batch, training=True)
    if 'teacher' not in cfg.model:  # features from shards: stand-ins of the shards' shape
        g = torch.Generator().manual_seed(0)
        for sample in data['data_samples']:
            sample['src_teacher'] = torch.randn(8, 4, 4, generator=g)
            sample['trg_teacher'] = torch.randn(8, 4, 4, generator=g)
    losses = model(**data, mode='loss')
    loss = losses['loss']
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for _, p in trainable)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
    assert all(k.startswith('extractor.') for k in model.state_dict())
