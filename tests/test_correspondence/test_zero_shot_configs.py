"""The zero-shot preset configs (correspondence/configs/zero_shot/): each loads, names only
registered types, uses the dataset, PCK preset and frame it claims, and, with its pretrained
paths pointed at tiny models built here and its sizes shrunk, builds with ``MODELS.build`` and
predicts keypoints on a pair of its dataset's fake release through its own pipeline (no
network, no weights).
"""
import copy
import glob
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import (DATA_SAMPLERS, DATASETS, FUNCTIONS, HOOKS, LOOPS, METRICS,
                               MODELS, TRANSFORMS, VISBACKENDS)

import common  # noqa: F401  registers the teachers
import correspondence  # noqa: F401  registers datasets, transforms, extractors, metric
from correspondence.datasets.transforms import pair_collate
from tests.helpers.tiny_models import save_dinov2_models, save_sd_pipeline

from .fake_releases import write_cub, write_pf_pascal, write_pf_willow, write_spair

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG_DIR = osp.join(REPO_ROOT, 'correspondence', 'configs', 'zero_shot')
TINY_SIZE = 56  # 4 x 4 DINOv2 cells; a 28 x 28 latent for the tiny SD

# config -> (dataset type, the PCK preset it claims, (frame, size) of its ResizePair)
CLAIMS = {
    'hyperfeatures_sd15-one-step_224px_spair71k.py':
        ('SPair71kDataset', 'hyperfeatures', ('stretched', 224)),
    'pixels_softargmax_spair71k.py': ('SPair71kDataset', 'dift', ('padded', 224)),
    'dift_sd21-up1-t261-ens8_768px_spair71k.py': ('SPair71kDataset', 'dift', ('stretched', 768)),
    'dift_sd21-up1-t261-ens8_768px_pfwillow.py':
        ('PFWillowDataset', 'pfwillow_trg_kps', ('stretched', 768)),
    'dift_sd21-up1-t261-ens8_768px_cub.py': ('CUBPairsDataset', 'dift', ('stretched', 768)),
    'sd-dino_sd15-t100-dinov2b_840px_spair71k.py':
        ('SPair71kDataset', 'sd_dino', ('padded', 840)),
    'sd-dino_sd15-t100-dinov2b_840px_pfwillow.py':
        ('PFWillowDataset', 'pfwillow_trg_kps', ('padded', 840)),
    'sd-dino_sd15-t100-dinov2b_840px_cub.py': ('CUBPairsDataset', 'dift', ('padded', 840)),
    'sd-dino_sd15-t100-dinov2b_840px_pfpascal.py':
        ('PFPascalDataset', 'pfpascal_image', ('padded', 840)),
    'geoaware_sd15-t50-dinov2b_840px_spair71k.py':
        ('SPair71kDataset', 'geoaware_point', ('padded', 840)),
    'dinov2_vitb14_840px_spair71k.py':
        ('SPair71kDataset', 'distilldift_release', ('stretched', 840)),
    'dinov2_vitb14_840px_pfwillow.py':
        ('PFWillowDataset', 'pfwillow_trg_kps', ('stretched', 840)),
    'dinov2_vitb14_840px_cub.py': ('CUBPairsDataset', 'dift', ('stretched', 840)),
    'distilldift_dinov2-reg-b14-lora_434px_spair71k.py':
        ('SPair71kDataset', 'distilldift_release', ('stretched', 434)),
    'distilldift_dinov2-reg-b14-lora_434px_pfwillow.py':
        ('PFWillowDataset', 'pfwillow_trg_kps', ('stretched', 434)),
    'distilldift_dinov2-reg-b14-lora_434px_cub.py':
        ('CUBPairsDataset', 'dift', ('stretched', 434)),
}
SD15 = 'stable-diffusion-v1-5/stable-diffusion-v1-5'
# What each published recipe's model must be (one SPair-71k config per recipe).
RECIPES = {
    'dift_sd21-up1-t261-ens8_768px_spair71k.py': dict(
        matcher='ArgmaxMatcher', teachers=('stabilityai/stable-diffusion-2-1', [261], 8),
        layers=['up_blocks.1'], dino=[]),
    'sd-dino_sd15-t100-dinov2b_840px_spair71k.py': dict(
        matcher='ArgmaxMatcher', teachers=(SD15, [100], 1),
        layers=['up_blocks.0.resnets.1', 'up_blocks.1.attentions.1', 'up_blocks.2.attentions.1'],
        dino=[('facebook/dinov2-base', 12)]),
    'geoaware_sd15-t50-dinov2b_840px_spair71k.py': dict(
        matcher='SoftArgmaxMatcher', teachers=(SD15, [50], 1),
        layers=['up_blocks.0.resnets.1', 'up_blocks.1.attentions.1', 'up_blocks.2.attentions.1'],
        dino=[('facebook/dinov2-base', 12)]),
    'dinov2_vitb14_840px_spair71k.py': dict(
        matcher='SoftArgmaxMatcher', teachers=None, layers=[], dino=[('facebook/dinov2-base', -1)]),
    'distilldift_dinov2-reg-b14-lora_434px_spair71k.py': dict(
        matcher='SoftArgmaxMatcher', teachers=None, layers=[],
        dino=[('checkpoints/distilldift/dinov2-vitb14-reg-lora-merged', -1)]),
}
SPAIR_CONFIGS = sorted(c for c in CLAIMS if c.endswith('_spair71k.py'))


def configs_on_disk():
    return sorted(osp.basename(p) for p in glob.glob(osp.join(CONFIG_DIR, '*.py')))


def load(name):
    return Config.fromfile(osp.join(CONFIG_DIR, name))


def walk(node, path=''):
    """Every dict with a ``type`` inside ``node``, with its dotted path."""
    if isinstance(node, dict):
        if 'type' in node:
            yield path, node
        for key, value in node.items():
            yield from walk(value, f'{path}.{key}' if path else str(key))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from walk(value, f'{path}.{i}')


def registry_for(path):
    """The root registry a config path's ``type`` is built from."""
    head = path.split('.')[0]
    if head == 'model':
        return MODELS
    if head == 'test_dataloader':
        if '.pipeline.' in f'{path}.':
            return TRANSFORMS
        return {'sampler': DATA_SAMPLERS, 'collate_fn': FUNCTIONS}.get(path.split('.')[1],
                                                                     DATASETS)
    if head in ('test_pipeline', 'input_pipeline'):  # input_pipeline: a model base's input
        return TRANSFORMS
    return dict(test_evaluator=METRICS, test_cfg=LOOPS, default_hooks=HOOKS,
                vis_backends=VISBACKENDS, teacher=MODELS)[head]


def test_every_config_is_claimed():
    assert configs_on_disk() == sorted(CLAIMS), (
        'a zero-shot config without an entry in CLAIMS (or a claim without its config)')
    assert set(RECIPES) <= set(SPAIR_CONFIGS)


@pytest.mark.parametrize('name', sorted(CLAIMS))
def test_config_loads_registered_types_and_claims(name):
    cfg = load(name)
    typed = list(walk(cfg.to_dict()))
    assert typed
    for path, node in typed:
        registry = registry_for(path)
        assert registry.get(node['type']) is not None, \
            f'{name}: {path}.type={node["type"]!r} is not registered in {registry.name}'
    dataset, preset, (frame, size) = CLAIMS[name]
    assert cfg.test_dataloader.dataset.type == dataset
    names = [p if isinstance(p, str) else p['name'] for p in cfg.test_evaluator.presets]
    assert names[0] == preset, f'{name} reports {names}, claims {preset!r} first'
    assert 0.1 in cfg.test_evaluator.alphas
    resize = [t for t in cfg.test_dataloader.dataset.pipeline if t['type'] == 'ResizePair']
    assert [(r['frame'], r['size']) for r in resize] == [(frame, size)]
    assert cfg.test_dataloader.batch_size == 1 or name.startswith('pixels')
    assert cfg.model.type == 'CorrespondenceModel'


def _model_parts(model_cfg):
    parts = dict(teachers=[], layers=[], dino=[], matcher=model_cfg['matcher']['type'])
    for _, node in walk(model_cfg):
        if node['type'] == 'DiffusionExtractor':
            t = node['teacher']
            parts['teachers'].append((t['pretrained'], tuple(t['timesteps']), t['ensemble']))
            parts['layers'].append(node['layer'])
        elif node['type'] == 'DINOv2Extractor':
            parts['dino'].append((node['pretrained'], node['layer']))
    return parts


@pytest.mark.parametrize('name', sorted(RECIPES))
def test_recipe_models(name):
    recipe = RECIPES[name]
    parts = _model_parts(load(name).model.to_dict())
    assert parts['matcher'] == recipe['matcher']
    assert parts['layers'] == recipe['layers']
    assert parts['dino'] == recipe['dino']
    if recipe['teachers'] is None:
        assert parts['teachers'] == []
    else:
        pretrained, timesteps, ensemble = recipe['teachers']
        assert set(parts['teachers']) == {(pretrained, tuple(timesteps), ensemble)}


def test_diffusion_layers_exist_in_sd_topology():
    """The configured UNet module paths exist in SD 1.5 / 2.1's UNet (diffusers' default
    UNet2DConditionModel topology, built on the meta device: no memory, no weights)."""
    from diffusers import UNet2DConditionModel
    with torch.device('meta'):
        unet = UNet2DConditionModel()
    names = {n for n, _ in unet.named_modules()}
    for name in RECIPES:
        for layer in _model_parts(load(name).model.to_dict())['layers']:
            assert layer in names, f'{name}: {layer!r} is not a module of the SD UNet'


# ---------------------------------------------------------------------------- tiny forward
@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp('zero_shot')
    dino = save_dinov2_models(root / 'dino')
    sd = save_sd_pipeline(str(root / 'sd'))
    from diffusers import UNet2DConditionModel
    sd_layers = {n for n, _ in UNet2DConditionModel.from_pretrained(
        sd, subfolder='unet').named_modules()}
    releases = dict(
        SPair71kDataset=write_spair(str(root))['root'],
        PFWillowDataset=write_pf_willow(str(root / 'willow'))['root'],
        PFPascalDataset=write_pf_pascal(str(root / 'pascal'))['root'],
        CUBPairsDataset=write_cub(str(root / 'cub'))['root'])
    return dict(sd=sd, sd_layers=sd_layers, dino=dino['plain'],
                dino_reg=dino['reg'], releases=releases)


def shrink(model_cfg, tiny):
    """The model dict with tiny weights and small sizes; everything else as configured."""
    model_cfg = copy.deepcopy(model_cfg)
    for _, node in walk(model_cfg):
        if node['type'] == 'DiffusionTeacher':
            node.update(pretrained=tiny['sd'], ensemble=min(node.get('ensemble', 1), 2))
        elif node['type'] == 'DiffusionExtractor':
            node['teacher'].update(pretrained=tiny['sd'],
                                   ensemble=min(node['teacher'].get('ensemble', 1), 2))
            if node['layer'] not in tiny['sd_layers']:  # the tiny UNet has two up levels
                node['layer'] = 'up_blocks.1'
        elif node['type'] == 'DINOv2Extractor':
            reg = 'reg' in node['pretrained'] or 'distilldift' in node['pretrained']
            node.update(pretrained=tiny['dino_reg' if reg else 'dino'],
                        layer=min(node['layer'], 2))
        elif node['type'] == 'FusedExtractor':
            if node.get('pca_dim') is not None:
                node['pca_dim'] = 4
            if isinstance(node.get('size'), (list, tuple)):
                node['size'] = (6, 6)
    return model_cfg


@pytest.mark.parametrize('name', sorted(CLAIMS))
def test_builds_and_predicts_on_a_fake_pair(name, tiny):
    """MODELS.build on the shrunk model, the config's own dataset and pipeline (frame kept,
    size shrunk) on a fake release in the official format, one test_step."""
    cfg = load(name)
    model = MODELS.build(shrink(cfg.model.to_dict(), tiny))
    model.eval()
    dataset_cfg = cfg.test_dataloader.dataset.to_dict()
    pipeline = copy.deepcopy(dataset_cfg['pipeline'])
    for t in pipeline:
        if t['type'] == 'ResizePair':
            t['size'] = TINY_SIZE
    dataset_cfg.update(data_root=tiny['releases'][dataset_cfg['type']], pipeline=pipeline)
    if dataset_cfg['type'] == 'CUBPairsDataset':
        dataset_cfg['num_pairs'] = 2  # the fake release holds a handful of pairs
    dataset = DATASETS.build(dataset_cfg)
    item = dataset[0]
    sample = item['data_samples']
    assert tuple(item['inputs']['trg'].shape[-2:]) == (TINY_SIZE, TINY_SIZE)
    with torch.no_grad():
        out = model.test_step(pair_collate([item]))
    assert len(out) == 1 and out[0]['pair_id'] == sample['pair_id']
    pred = np.asarray(out[0]['pred_kps'])
    assert pred.shape == np.asarray(sample['trg_kps']).shape and pred.dtype == np.float32
    assert np.isfinite(pred).all()
    side = max(sample['trg_imsize'])  # in original target pixels (a padded frame's cells
    assert (np.abs(pred) < 2 * side).all()  # may map slightly outside the image)


def test_distilldift_student_needs_its_weights():
    """No weights are bundled or faked: the student config names a local folder and fails,
    naming it, until the converted student is there."""
    cfg = load('distilldift_dinov2-reg-b14-lora_434px_spair71k.py')
    with pytest.raises(FileNotFoundError, match='distilldift/dinov2-vitb14-reg-lora-merged'):
        MODELS.build(cfg.model)


@pytest.mark.parametrize('name,key', [
    ('distilldift_dinov2-reg-b14-lora_434px_spair71k.py',
     'model.extractor.extractors.0.pretrained'),
    ('dinov2_vitb14_840px_spair71k.py', 'model.extractor.pretrained'),
    ('sd-dino_sd15-t100-dinov2b_840px_spair71k.py',
     'model.extractor.extractors.0.extractors.2.teacher.pretrained'),
    ('dift_sd21-up1-t261-ens8_768px_spair71k.py', 'model.extractor.teacher.pretrained'),
    ('dift_sd21-up1-t261-ens8_768px_pfwillow.py', 'test_dataloader.dataset.data_root'),
])
def test_documented_cfg_options_exist(name, key):
    """The --cfg-options keys the README documents pass tools/test.py's key check."""
    from tools._cli import check_cfg_options
    cfg = load(name)
    check_cfg_options(cfg, {key: '/somewhere'})
    cfg.merge_from_dict({key: '/somewhere'})
    node = cfg
    for part in key.split('.'):
        node = node[int(part)] if part.isdigit() else node[part]
    assert node == '/somewhere'
