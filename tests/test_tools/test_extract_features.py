"""tools/extract_features.py: output format, resizing, ordering, errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from common.teachers import DiffusionTeacher
from tests.helpers.tiny_models import save_ddpm_pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(ROOT, 'tools', 'extract_features.py')
MID = 'mid_block.resnets.1.conv2'


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('extract')
    pipe = save_ddpm_pipeline(str(tmp / 'pipe'))
    config = tmp / 'cfg.py'
    config.write_text(f"teacher = dict(type='DiffusionTeacher', pretrained={pipe!r}, "
                      f"layers=['{MID}', 'down_blocks.1'], timesteps=[5, 50], noise='none')\n")
    images = tmp / 'images'
    images.mkdir()
    rng = np.random.default_rng(0)
    arrays = {}
    for name, size in (('b.png', 16), ('a.jpg', 24), ('c.jpeg', 16)):
        arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(arr).save(images / name, quality=100)
        arrays[name] = np.asarray(Image.open(images / name).convert('RGB'))
    (images / 'notes.txt').write_text('not an image')
    return dict(tmp=tmp, pipe=pipe, config=str(config), images=str(images), arrays=arrays)


def run(*args):
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True,
                          cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE='1'))


def test_output_format_order_and_values(setup):
    out = str(setup['tmp'] / 'feats.safetensors')
    res = run(setup['config'], '--images', setup['images'], '--out', out, '--batch-size', '2')
    assert res.returncode == 0, res.stderr
    with safe_open(out, framework='pt') as f:
        names = json.loads(f.metadata()['images'])
        feats = {k: f.get_tensor(k) for k in f.keys()}
    assert names == ['a.jpg', 'b.png', 'c.jpeg']
    assert sorted(feats) == sorted([f'{MID}@5', f'{MID}@50', 'down_blocks.1@5', 'down_blocks.1@50'])
    assert all(v.dtype == torch.float32 and v.shape[0] == 3 for v in feats.values())
    # Independent recomputation: 16x16 images untouched, the 24x24 one resized bicubically.
    teacher = DiffusionTeacher(setup['pipe'], layers=[MID], timesteps=[50], noise='none')
    a = np.asarray(Image.fromarray(setup['arrays']['a.jpg']).resize((16, 16), Image.BICUBIC))
    x = torch.from_numpy(np.stack([a, setup['arrays']['b.png'], setup['arrays']['c.jpeg']]))
    x = x.permute(0, 3, 1, 2).float() / 127.5 - 1
    torch.testing.assert_close(feats[f'{MID}@50'], teacher(x)[f'{MID}@50'], atol=1e-5, rtol=1e-4)


def test_undecodable_image_is_named_and_nothing_written(setup, tmp_path):
    images = tmp_path / 'imgs'
    images.mkdir()
    Image.new('RGB', (16, 16)).save(images / 'ok.png')
    (images / 'broken.png').write_bytes(b'\x89PNG not really')
    out = tmp_path / 'f.safetensors'
    res = run(setup['config'], '--images', str(images), '--out', str(out))
    assert res.returncode == 2
    assert 'broken.png' in res.stderr and 'Traceback' not in res.stderr
    assert not out.exists() and os.listdir(tmp_path) == ['imgs']


def test_list_layers_and_unknown_layer(setup):
    res = run(setup['config'], '--list-layers')
    assert res.returncode == 0 and MID in res.stdout.split()
    res = run(setup['config'], '--images', setup['images'], '--out', '/tmp/x.safetensors',
              '--cfg-options', "teacher.layers=['mid_block.resnetz.1.conv2']")
    assert res.returncode == 2 and 'mid_block.resnets.1.conv2' in res.stderr
    assert 'Traceback' not in res.stderr


def test_cfg_options_typo_names_the_nearest_keys(setup):
    res = run(setup['config'], '--list-layers', '--cfg-options', 'teacher.timestep=[5]')
    assert res.returncode == 2, res.stderr
    err = res.stderr.strip()
    assert "'teacher.timestep' does not exist" in err and 'teacher.timesteps' in err
    assert '\n' not in err and 'Traceback' not in err
    # "+KEY" still adds a key on purpose (DiffusionTeacher takes max_batch_size)
    res = run(setup['config'], '--list-layers', '--cfg-options', '+teacher.max_batch_size=2')
    assert res.returncode == 0 and MID in res.stdout.split(), res.stderr
