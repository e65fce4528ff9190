"""tools/linear_probe.py: the probe itself, feature specs, checkpoint prefixes, errors."""
import importlib.util
import json
import os

import numpy as np
import pytest
import torch

from common.io import save_checkpoint
from tests.helpers.tiny_models import save_ddpm_pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, 'classification_distill', 'configs', 'demo_digits',
                      'resnet18-w16_1xb32-100e_digits-10shot_scratch.py')
MID = 'mid_block.resnets.1.conv2'


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        'linear_probe_tool', os.path.join(ROOT, 'tools', 'linear_probe.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


probe = _load_tool()


def test_probe_accuracy_separable_and_shuffled():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, (4, 8))
    y_train, y_test = np.arange(200) % 4, np.arange(100) % 4
    x_train = centres[y_train] + rng.normal(0, 0.5, (200, 8))
    x_test = centres[y_test] + rng.normal(0, 0.5, (100, 8))
    assert probe.probe_accuracy(x_train, y_train, x_test, y_test) == 100.0
    noise_train, noise_test = rng.normal(size=(200, 8)), rng.normal(size=(100, 8))
    assert probe.probe_accuracy(noise_train, y_train, noise_test, y_test) < 45.0


def test_pixels_random_and_checkpoint_backbones(tmp_path):
    """A checkpoint holding the seed-0 backbone (under either prefix) probes like 'random'."""
    cfg = probe._cli.load_config(CONFIG)
    backbone = probe.load_backbone(cfg, 'random', seed=0)
    weights = backbone.state_dict()
    distill_ckpt = str(tmp_path / 'distill.pth')
    save_checkpoint({'state_dict': {f'student.backbone.{k}': v for k, v in weights.items()}},
                    distill_ckpt)
    cls_ckpt = str(tmp_path / 'cls.pth')
    save_checkpoint({'state_dict': {f'backbone.{k}': v for k, v in weights.items()}}, cls_ckpt)
    out = tmp_path / 'probe.json'
    probe.main([CONFIG, '--features', 'pixels', 'backbone:random', f'backbone:{distill_ckpt}',
                f'backbone:{cls_ckpt}', '--out', str(out)])
    saved = json.loads(out.read_text())
    assert saved['train_size'] == 100 and saved['test_size'] == 600
    feats = saved['features']
    assert feats['pixels']['dim'] == 3 * 32 * 32
    assert feats['backbone:random']['dim'] == 128
    assert feats[f'backbone:{distill_ckpt}'] == feats['backbone:random']
    assert feats[f'backbone:{cls_ckpt}'] == feats['backbone:random']
    # handwritten digits are far from chance (10%) for a linear model on pixels
    assert feats['pixels']['top1'] > 70.0


def test_teacher_feature_is_pooled_and_deterministic(tmp_path):
    pipe = save_ddpm_pipeline(str(tmp_path / 'pipe'), sample_size=32)
    spec = f'teacher:{pipe}:{MID}@100'
    first = probe.main([CONFIG, '--features', spec])['features'][spec]
    second = probe.main([CONFIG, '--features', spec])['features'][spec]
    from common.teachers import DiffusionTeacher
    channels = DiffusionTeacher(pretrained=pipe, layers=[MID], timesteps=[100]).extract(
        torch.zeros(1, 3, 32, 32))[f'{MID}@100'].shape[1]
    assert first['dim'] == channels
    assert first == second


@pytest.mark.parametrize('spec, message', [
    ('pixel', "Unknown feature spec 'pixel'"),
    ('teacher:somewhere:mid_block', 'teacher:PIPELINE_DIR:LAYER@T'),
    ('backbone:/no/such/file.pth', 'does not exist'),
])
def test_bad_specs_are_one_paragraph_errors(spec, message, capsys):
    assert probe.cli([CONFIG, '--features', spec]) in (1, 2)
    err = capsys.readouterr().err
    assert message in err and 'Traceback' not in err


def test_checkpoint_without_backbone_names_its_keys(tmp_path, capsys):
    ckpt = str(tmp_path / 'other.pth')
    save_checkpoint({'state_dict': {'head.fc.weight': torch.zeros(2, 2)}}, ckpt)
    assert probe.cli([CONFIG, '--features', f'backbone:{ckpt}']) == 1
    err = capsys.readouterr().err
    assert 'no backbone weights' in err and 'head' in err
