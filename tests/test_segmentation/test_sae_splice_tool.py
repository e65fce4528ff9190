"""tools/analysis/sae_splice_fidelity.py on a tiny random pixel DDPM, tiny PNGs and SAEs saved
with save_sae: its JSON against direct ``splice_fidelity`` calls, an exactly-reconstructing SAE,
the mean token of token shards, batching, and its one-paragraph errors."""
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch

from segmentation.sae import ReluSAE, save_sae
from segmentation.sae.collect import SAEFeatureShards, collect_sae_features, load_square_image
from segmentation.sae.splice import splice_fidelity
from tests.helpers.tiny_models import save_ddpm_pipeline

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = 'tools/analysis/sae_splice_fidelity.py'
LAYER = 'up_blocks.0.resnets.0'  # 64 channels at 8 x 8 on the 16-px tiny UNet
SIZE = 16
NUM_IMAGES = 3


def write_pngs(root, count, seed=0):
    from PIL import Image
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    for i in range(count):
        img = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
        Image.fromarray(img).save(osp.join(root, f'img{i}.png'))
    return root


def teacher_cfg(ddpm, timesteps=(50, ), layer=LAYER):
    return dict(type='DiffusionTeacher', pretrained=ddpm, layers=[layer],
                timesteps=list(timesteps), seed=0)


def write_config(path, ddpm, sae_cfg, **teacher_kwargs):
    with open(path, 'w') as f:
        f.write(f'teacher = {teacher_cfg(ddpm, **teacher_kwargs)!r}\nsae = {sae_cfg!r}\n')
    return str(path)


def exact_sae(d_in):
    """A ReluSAE with 2 * d_in latents that reconstructs every token exactly:
    h = relu([x, -x]), x_hat = h[:d] - h[d:] = x (reference variant: unit-norm columns)."""
    sae = ReluSAE(d_in=d_in, d_sae=2 * d_in)
    eye = torch.eye(d_in)
    with torch.no_grad():
        sae.encoder.weight.copy_(torch.cat([eye, -eye]))
        sae.encoder.bias.zero_()
        sae.decoder.weight.copy_(torch.cat([eye, -eye], dim=1))
        sae.decoder.bias.zero_()
    return sae


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('splice')
    ddpm = save_ddpm_pipeline(str(root / 'ddpm'), sample_size=SIZE)
    images = write_pngs(str(root / 'images'), NUM_IMAGES + 1)  # the tool takes the first 3
    torch.manual_seed(0)
    random_sae = ReluSAE(d_in=64, d_sae=32)
    return dict(root=root, ddpm=ddpm, images=images, random_sae=random_sae,
                random_ckpt=save_sae(random_sae, str(root / 'random.safetensors')),
                exact_ckpt=save_sae(exact_sae(64), str(root / 'exact.safetensors')),
                random_cfg=write_config(root / 'random.py', ddpm,
                                        dict(type='ReluSAE', d_in=64, d_sae=32)),
                exact_cfg=write_config(root / 'exact.py', ddpm,
                                       dict(type='ReluSAE', d_in=64, d_sae=128)))


def direct(setup, sae, timestep, mean_token=None, count=NUM_IMAGES):
    """splice_fidelity called here on the plain diffusers UNet and scheduler."""
    from diffusers import DDPMScheduler, UNet2DModel
    unet = UNet2DModel.from_pretrained(osp.join(setup['ddpm'], 'unet')).eval()
    sched = DDPMScheduler.from_pretrained(osp.join(setup['ddpm'], 'scheduler'))
    images = torch.stack([load_square_image(osp.join(setup['images'], f'img{i}.png'), SIZE)
                          for i in range(count)])
    return splice_fidelity(unet, LAYER, sae.eval(), images, timestep, sched, seed=0,
                           mean_token=mean_token)


def run_tool(tools_kit, argv):
    tool = tools_kit.load('analysis/sae_splice_fidelity')
    return tool._cli.run_cli(tool.PROG, tool.main, argv)


def test_tool_json_equals_direct_splice_fidelity(setup, tmp_path, tools_kit, capsys):
    out = str(tmp_path / 'splice.json')
    argv = [setup['random_cfg'], setup['random_ckpt'], '--images', setup['images'],
            '--num-images', str(NUM_IMAGES), '--size', str(SIZE), '--timesteps', '300', '20',
            '--device', 'cpu', '--out', out]
    assert run_tool(tools_kit, argv) == 0
    printed = capsys.readouterr().out
    record = json.load(open(out))
    assert record['layer'] == LAYER and record['num_images'] == NUM_IMAGES
    assert record['timesteps'] == [20, 300] and record['sae_class'] == 'ReluSAE'
    assert [r['timestep'] for r in record['results']] == [20, 300]
    for row in record['results']:
        want = direct(setup, setup['random_sae'], row['timestep'])
        assert set(row['mse']) == {'original', 'sae', 'zeros', 'mean'}
        for mode, value in want['mse'].items():
            assert row['mse'][mode] == pytest.approx(value, rel=1e-5)
        assert row['recovered'] == pytest.approx(want['recovered'], rel=1e-4)
        assert row['feature_fve'] == pytest.approx(want['feature_fve'], rel=1e-4)
        assert row['mean_token'] == 'images'
        # a random 32-latent SAE on 64 channels loses information: worse than the block itself
        assert row['mse']['sae'] > row['mse']['original'] and row['feature_fve'] < 1
    # the printed table: a header and one row per timestep with the recovered fraction
    lines = printed.splitlines()
    assert lines[1].split() == ['t', 'mse', 'original', 'mse', 'sae', 'mse', 'zeros', 'mse',
                                'mean', 'recovered', 'feature', 'FVE']
    assert lines[2].split()[0] == '20' and \
        lines[2].split()[5] == f'{record["results"][0]["recovered"]:.4f}'
    assert printed.rstrip().endswith(f'wrote {out}')
    assert os.listdir(tmp_path) == ['splice.json']  # atomic: no temporary left behind


def test_exact_sae_recovers_everything_default_timestep_and_batches(setup, tmp_path, tools_kit):
    out = str(tmp_path / 'exact.json')
    base = [setup['exact_cfg'], setup['exact_ckpt'], '--images', setup['images'], '--size',
            str(SIZE), '--device', 'cpu']
    assert run_tool(tools_kit, base + ['--num-images', str(NUM_IMAGES), '--out', out]) == 0
    (row, ) = json.load(open(out))['results']
    assert row['timestep'] == 50  # the teacher's
    assert row['mse']['sae'] == row['mse']['original']  # the block's output reproduced exactly
    assert row['recovered'] == 1.0 and row['feature_mse'] == 0 and row['feature_fve'] == 1
    assert row['mse']['zeros'] > row['mse']['original']
    want = direct(setup, exact_sae(64), 50)
    assert row['mse']['original'] == pytest.approx(want['mse']['original'], rel=1e-5)
    # all 4 images at once vs batches of 3 + 1: the same MSEs (image-weighted means)
    whole, batched = str(tmp_path / 'whole.json'), str(tmp_path / 'batched.json')
    assert run_tool(tools_kit, base + ['--out', whole]) == 0
    assert run_tool(tools_kit, base + ['--batch-size', '3', '--out', batched]) == 0
    a, b = json.load(open(whole)), json.load(open(batched))
    assert a['num_images'] == b['num_images'] == 4 and b['batch_size'] == 3
    for mode in ('original', 'sae', 'zeros'):
        assert b['results'][0]['mse'][mode] == pytest.approx(a['results'][0]['mse'][mode],
                                                             rel=1e-5)
    assert b['results'][0]['recovered'] == 1.0


def test_mean_token_from_feature_shards(setup, tmp_path, tools_kit):
    import importlib
    from mmengine.registry import MODELS
    importlib.import_module('common.teachers')
    teacher = MODELS.build(teacher_cfg(setup['ddpm'])).eval()
    feats = str(tmp_path / 'tokens')
    collect_sae_features(teacher, setup['images'], feats, size=SIZE, dtype='float32',
                         show_progress=False)
    mean = SAEFeatureShards(feats).token_matrix().double().mean(0).float()
    out = str(tmp_path / 'mean.json')
    argv = [setup['random_cfg'], setup['random_ckpt'], '--images', setup['images'],
            '--num-images', str(NUM_IMAGES), '--size', str(SIZE), '--timesteps', '50', '400',
            '--features', feats, '--device', 'cpu', '--out', out]
    assert run_tool(tools_kit, argv) == 0
    record = json.load(open(out))
    assert record['features_timestep'] == 50 and record['features_tokens'] == 4 * 64
    at50, at400 = record['results']
    assert (at50['mean_token'], at400['mean_token']) == ('features', 'images')
    want = direct(setup, setup['random_sae'], 50, mean_token=mean)
    assert at50['mse']['mean'] == pytest.approx(want['mse']['mean'], rel=1e-5)
    # the shards' mean (4 images) differs from the 3 images' own mean: another number
    assert at50['mse']['mean'] != pytest.approx(direct(setup, setup['random_sae'], 50)['mse'][
        'mean'], rel=1e-7)
    assert at400['mse']['mean'] == pytest.approx(
        direct(setup, setup['random_sae'], 400)['mse']['mean'], rel=1e-5)


def test_errors(setup, tmp_path, tools_kit, capsys):
    base = ['--images', setup['images'], '--size', str(SIZE), '--device', 'cpu', '--out',
            str(tmp_path / 'x.json')]
    missing = str(tmp_path / 'nothing.safetensors')
    assert run_tool(tools_kit, [setup['random_cfg'], missing] + base) == 1
    assert f"SAE checkpoint '{missing}' does not exist" in capsys.readouterr().err
    # an SAE of width 32 against the block's 64 channels
    narrow = save_sae(ReluSAE(d_in=32, d_sae=16), str(tmp_path / 'narrow.safetensors'))
    cfg = write_config(tmp_path / 'narrow.py', setup['ddpm'],
                       dict(type='ReluSAE', d_in=32, d_sae=16))
    assert run_tool(tools_kit, [cfg, narrow] + base) == 1
    err = capsys.readouterr().err
    assert f"reads tokens of width d_in=32, but the teacher's block '{LAYER}' outputs 64 " \
        'channels; expected the SAE trained on this block' in err
    assert len(err.strip().splitlines()) == 1  # one paragraph
    empty = tmp_path / 'empty'
    empty.mkdir()
    argv = [setup['random_cfg'], setup['random_ckpt'], '--images', str(empty), '--size',
            str(SIZE), '--device', 'cpu']
    assert run_tool(tools_kit, argv) == 1
    assert f'{empty}: expected images with extensions' in capsys.readouterr().err
    # a checkpoint of another SAE width than the config's
    assert run_tool(tools_kit, [setup['exact_cfg'], setup['random_ckpt']] + base) == 1
    assert 'does not fit this ReluSAE' in capsys.readouterr().err
    # token shards of another block for the mean token
    other = 'up_blocks.1.resnets.0'
    import importlib
    from mmengine.registry import MODELS
    importlib.import_module('common.teachers')
    teacher = MODELS.build(teacher_cfg(setup['ddpm'], layer=other)).eval()
    feats = str(tmp_path / 'other_tokens')
    collect_sae_features(teacher, setup['images'], feats, size=SIZE, dtype='float32',
                         show_progress=False)
    assert run_tool(tools_kit, [setup['random_cfg'], setup['random_ckpt'], '--features',
                                feats] + base) == 1
    assert f"its tokens come from layer '{other}', but the teacher's block is '{LAYER}'" in \
        capsys.readouterr().err


def test_help_imports_nothing_heavy_and_argument_error():
    path = osp.join(REPO_ROOT, TOOL)
    proc = subprocess.run([sys.executable, '-X', 'importtime', path, '--help'],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith('usage:')
    imported = {line.split('|')[-1].strip().split('.')[0] for line in proc.stderr.splitlines()
                if line.startswith('import time:')}
    assert not imported & {'torch', 'mmengine', 'transformers', 'diffusers', 'common',
                           'segmentation', 'matplotlib'}
    for argv, message in ((['cfg.py', 'sae.safetensors', '--images', 'd', '--num-images', '0'],
                           '--num-images must be at least 1, got 0'),
                          (['cfg.py', 'sae.safetensors', '--images', 'd', '--out', 'r.txt'],
                           "--out must name a .json file, got 'r.txt'"),
                          (['cfg.py', 'sae.safetensors'],
                           'the following arguments are required: --images')):
        proc = subprocess.run([sys.executable, path] + argv, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 2
        assert proc.stderr.strip() == f'{TOOL}: error: {message}; see {TOOL} --help'
