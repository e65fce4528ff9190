"""SAE feature collection, mask alignment, splice-back fidelity, figures and the SAE analysis tools
(segmentation/sae/{collect,alignment,splice,figures,probe}.py, tools/collect_sae_features.py,
tools/analysis/sae_{timestep_sweep,mask_alignment}.py) on a tiny random pixel DDPM, tiny PNGs and
hand-made masks."""
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common.io.feature_shards import FeatureShardError, FeatureShards, write_shards
from segmentation.sae import alignment, figures, probe, splice
from segmentation.sae.collect import (SAEFeatureError, SAEFeatureShards, collect_sae_features,
                                      from_tokens, load_square_image, to_tokens)
from tests.helpers.tiny_models import save_ddpm_pipeline

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
LAYER = 'up_blocks.0.resnets.0'  # 64 channels at 8 x 8 on the 16-px tiny UNet
SIZE = 16


def write_pngs(root, count, size=SIZE, seed=0, masks=False):
    """``count`` PNGs (``img{i}.png``); with ``masks``: a same-stem .npy mask each, class 1 where
    the image is bright (a square), 0 elsewhere."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    for i in range(count):
        img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
        mask = np.zeros((size, size), np.uint8)
        y, x = rng.integers(0, size // 2, 2)
        mask[y:y + size // 2, x:x + size // 2] = 1
        img[mask == 1] += 180
        Image.fromarray(img).save(osp.join(root, f'img{i}.png'))
        if masks:
            np.save(osp.join(root, f'img{i}.npy'), mask)
    return root


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('sae')
    ddpm = save_ddpm_pipeline(str(root / 'ddpm'), sample_size=SIZE)
    return dict(root=root, ddpm=ddpm, images=write_pngs(str(root / 'images'), 5),
                train=write_pngs(str(root / 'train'), 4, seed=1, masks=True),
                test=write_pngs(str(root / 'test'), 3, seed=2, masks=True))


def teacher_cfg(ddpm, timesteps=(50, ), layers=(LAYER, )):
    return dict(type='DiffusionTeacher', pretrained=ddpm, layers=list(layers),
                timesteps=list(timesteps), seed=0)


def build_teacher(cfg):
    import importlib
    from mmengine.registry import MODELS
    importlib.import_module('common.teachers')  # registers DiffusionTeacher
    return MODELS.build(cfg).eval()


def reference_block(ddpm, image, t, seed=0):
    """The block output computed independently: x_t from the closed form with one
    randn(1, 3, S, S) from the seed, the UNet run with a plain hook."""
    from diffusers import DDPMScheduler, UNet2DModel
    unet = UNet2DModel.from_pretrained(osp.join(ddpm, 'unet')).eval()
    sched = DDPMScheduler.from_pretrained(osp.join(ddpm, 'scheduler'))
    eps = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    abar = sched.alphas_cumprod[t].double()
    x_t = (abar.sqrt() * image.double() + (1 - abar).sqrt() * eps.double()).float()
    got = {}
    handle = dict(unet.named_modules())[LAYER].register_forward_hook(
        lambda m, i, o: got.setdefault('f', o))
    with torch.no_grad():
        unet(x_t[None] if x_t.dim() == 3 else x_t, torch.tensor([t]))
    handle.remove()
    return got['f'][0]


# ------------------------------------------------------------------------------------ tokens
def test_tokens_are_row_major_and_round_trip():
    feats = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4)  # C=2, h=3, w=4
    tokens = to_tokens(feats)
    assert tokens.shape == (12, 2)
    assert torch.equal(tokens[1 * 4 + 2], feats[:, 1, 2])  # token y * w + x
    assert torch.equal(from_tokens(tokens, 3, 4), feats)
    batch = torch.stack([feats, feats + 100])
    assert torch.equal(to_tokens(batch)[12:], tokens + 100)
    assert torch.equal(from_tokens(to_tokens(batch), 3, 4), batch)
    with pytest.raises(SAEFeatureError, match=r'expected tokens \[B \* 3 \* 5, D\], got shape '
                                              r'\(12, 2\)'):
        from_tokens(tokens, 3, 5)


# -------------------------------------------------------------------------------- collection
def test_collect_round_trip_resume_and_settings(setup, tmp_path):
    teacher = build_teacher(teacher_cfg(setup['ddpm']))
    out = str(tmp_path / 'feats')
    writer = collect_sae_features(teacher, setup['images'], out, size=SIZE, shard_size=2,
                                  dtype='float32', batch_size=3, show_progress=False,
                                  teacher_cfg=teacher_cfg(setup['ddpm']))
    assert len(writer.written) == 3 and len(writer.done) == 5  # 2 + 2 + 1 images
    shards = SAEFeatureShards(out)
    assert shards.keys() == [f'img{i}.png' for i in range(5)]
    assert shards.settings['layer'] == LAYER and shards.settings['timestep'] == 50
    image = load_square_image(osp.join(setup['images'], 'img3.png'), SIZE)
    ref = reference_block(setup['ddpm'], image, 50)
    assert ref.shape == (64, 8, 8)
    torch.testing.assert_close(shards.get('img3.png'), ref, rtol=1e-4, atol=1e-5)
    tokens = shards.tokens('img3.png')
    assert tokens.shape == (64, 64)  # h * w = 64 tokens of C = 64
    torch.testing.assert_close(tokens[9], ref[:, 1, 1], rtol=1e-4, atol=1e-5)
    batches = list(shards.iter_batches(images_per_batch=2))
    assert [b.shape[0] for b in batches] == [128, 128, 64]
    assert torch.equal(torch.cat(batches), shards.token_matrix())

    # an interrupted run: the middle shard lost its JSON -> only its 2 images are recomputed
    before = {k: shards.get(k) for k in shards.keys()}
    os.remove(osp.join(out, 'rank000', 'shard-000001.json'))
    os.remove(osp.join(out, 'manifest.json'))
    again = collect_sae_features(teacher, setup['images'], out, size=SIZE, shard_size=2,
                                 dtype='float32', batch_size=3, show_progress=False,
                                 teacher_cfg=teacher_cfg(setup['ddpm']))
    assert [osp.basename(p) for p in again.written] == ['shard-000003.safetensors']
    reread = SAEFeatureShards(out)
    assert reread.keys() == list(before)
    for key, value in before.items():
        assert torch.equal(reread.get(key), value)

    # another timestep into the same folder is refused, naming the setting
    other = build_teacher(teacher_cfg(setup['ddpm'], timesteps=(100, )))
    with pytest.raises(SAEFeatureError, match=r'holds SAE features written with timestep=50 .*'
                                              r'this run has timestep=100'):
        collect_sae_features(other, setup['images'], out, size=SIZE, shard_size=2,
                             dtype='float32', show_progress=False,
                             teacher_cfg=teacher_cfg(setup['ddpm']))


def test_collect_errors(setup, tmp_path):
    from PIL import Image
    folder = tmp_path / 'odd'
    folder.mkdir()
    Image.new('RGB', (20, 16)).save(folder / 'wide.png')
    with pytest.raises(SAEFeatureError, match=r'wide.png: expected a square image .* got 20x16'):
        load_square_image(str(folder / 'wide.png'), SIZE)
    two = build_teacher(teacher_cfg(setup['ddpm'], timesteps=(50, 100)))
    with pytest.raises(SAEFeatureError, match=r'ONE block at ONE timestep, but the teacher has '
                                              r'layers=.* and timesteps=\[50, 100\]'):
        collect_sae_features(two, setup['images'], str(tmp_path / 'x'), size=SIZE)
    unseeded = build_teacher(dict(teacher_cfg(setup['ddpm']), seed=None))
    with pytest.raises(SAEFeatureError, match=r'seed=None.*set the teacher\'s seed'):
        collect_sae_features(unseeded, setup['images'], str(tmp_path / 'x'), size=SIZE)
    with pytest.raises(SAEFeatureError, match=r'no-such: expected a folder of images .* Pass '
                                              r'--images DIR'):
        collect_sae_features(build_teacher(teacher_cfg(setup['ddpm'])),
                             str(tmp_path / 'no-such'), str(tmp_path / 'x'), size=SIZE)
    with pytest.raises(SAEFeatureError, match=r'manifest.json: expected the manifest of a '
                                              r'SAE-feature folder.*tools/collect_sae_features.py'):
        SAEFeatureShards(str(tmp_path / 'x'))


def test_generic_feature_shards_speak_generically(tmp_path):
    keys = ['a.png', 'b.png']
    write_shards(str(tmp_path), keys, lambda ks: (torch.ones(len(ks), 2, 1, 1), None),
                 dict(model='m'), shard_size=1, show_progress=False)
    shards = FeatureShards(str(tmp_path))
    assert torch.equal(shards.get('b.png'), torch.ones(2, 1, 1))
    with pytest.raises(FeatureShardError, match=r"'c.png': expected an image key .* of the "
                                                 r'feature folder'):
        shards.get('c.png')


# ------------------------------------------------------------------------------------ alignment
def hand_example():
    """One 4 x 4 image: class 1 in the left three columns (12 px), class 0 in the last (4 px).
    Latent 0 fires on rows 0-2 of columns 0-1 (6 px, all class 1), latent 1 everywhere (dense),
    latent 2 on rows 0-1 of column 3 (2 px, class 0)."""
    mask = torch.tensor([[1, 1, 1, 0]] * 4)[None]
    maps = torch.zeros(1, 3, 4, 4)
    maps[0, 0, :3, :2] = 2.0
    maps[0, 1] = 0.5
    maps[0, 2, :2, 3] = 1.0
    return maps, mask


def test_alignment_matches_hand_computed_values():
    maps, mask = hand_example()
    acc = alignment.MaskAlignment(3, 2, latent_chunk=1)  # chunks of one latent
    acc.update(maps, mask)
    res = acc.compute()
    # latent 0 vs class 1: I = 6, |A| = 6, |M| = 12, union = 12
    assert res['iou'][0, 1] == pytest.approx(6 / 12)
    assert res['legacy_dice_half'][0, 1] == pytest.approx(6 / 18)  # the seed's "IoU"
    assert res['f1'][0, 1] == pytest.approx(12 / 18)
    assert res['legacy_dice_half'][0, 1] == pytest.approx(res['f1'][0, 1] / 2)
    assert res['recall'][0, 1] == pytest.approx(6 / 12)
    assert res['precision'][0, 1] == pytest.approx(1.0)
    # the dense latent overlaps class 1 best (12 / 16) but is not ranked
    assert res['iou'][1, 1] == pytest.approx(12 / 16)
    assert res['density'].tolist() == pytest.approx([6 / 16, 1.0, 2 / 16])
    assert res['dense'].tolist() == [True, True, False]  # 6/16 > 0.2 too
    assert res['best_latent'].tolist() == [2, -1]
    relaxed = alignment.MaskAlignment(3, 2, dense_fraction=0.5)
    relaxed.update(maps, mask)
    out = relaxed.compute()
    assert out['best_latent'].tolist() == [2, 0]  # latent 1 excluded, latent 0 ranked
    assert out['best_iou'].tolist() == pytest.approx([2 / 4, 6 / 12])
    unfiltered = alignment.MaskAlignment(3, 2, dense_fraction=1.0)
    unfiltered.update(maps, mask)
    # class 1: the always-on latent wins (12/16); class 0: latent 2 (2/4) beats it (4/16)
    assert unfiltered.compute()['best_latent'].tolist() == [2, 1]


def test_alignment_streams_ignores_and_upsamples():
    maps, mask = hand_example()
    one = alignment.MaskAlignment(3, 2, dense_fraction=0.5)
    one.update(torch.cat([maps, maps.flip(-1)]), torch.cat([mask, mask.flip(-1)]))
    two = alignment.MaskAlignment(3, 2, dense_fraction=0.5, latent_chunk=2)
    two.update(maps, mask)
    two.update(maps.flip(-1), mask.flip(-1))
    for key in ('intersection', 'active', 'area'):
        assert torch.equal(one.compute()[key], two.compute()[key])
    # an ignored pixel counts for neither the latent nor the mask
    ignored = mask.clone()
    ignored[0, 0, 0] = 255
    acc = alignment.MaskAlignment(3, 2, ignore_index=255)
    acc.update(maps, ignored)
    res = acc.compute()
    assert acc.pixels == 15 and res['area'].tolist() == [4, 11]
    assert res['iou'][0, 1] == pytest.approx(5 / 11)
    # native 2 x 2 maps are bilinearly upsampled to the 4 x 4 mask, then thresholded
    small = torch.tensor([[[[1.0, -1.0], [-1.0, -1.0]]]])
    acc = alignment.MaskAlignment(1, 2, dense_fraction=1.0)
    acc.update(small, mask)
    up = F.interpolate(small, size=(4, 4), mode='bilinear', align_corners=False)[0, 0] > 0
    assert acc.compute()['active'].item() == up.sum().item() == 4
    assert acc.compute()['intersection'][0].tolist() == [0, 4]
    with pytest.raises(alignment.AlignmentError, match=r'mask value 7 is outside the classes '
                                                       r'0..1 \(ignore_index=None\)'):
        alignment.MaskAlignment(3, 2).update(maps, mask * 7)
    with pytest.raises(alignment.AlignmentError, match=r'expected latent maps \[B, 3, h, w\]'):
        alignment.MaskAlignment(3, 2).update(maps[:, :2], mask)


def test_alignment_table_json_and_markdown(tmp_path):
    maps, mask = hand_example()
    acc = alignment.MaskAlignment(3, 2, dense_fraction=0.5)
    acc.update(maps, mask)
    table = acc.table(['background', 'digit'], top_k=2)
    assert table['dense_latents'] == [1]
    assert [r['best_latent'] for r in table['classes']] == [2, 0]
    assert table['mean_best_iou'] == pytest.approx((0.5 + 0.5) / 2)
    assert [t['latent'] for t in table['classes'][1]['top']] == [0]  # latent 2 misses class 1
    alignment.write_table(table, str(tmp_path / 't.json'), str(tmp_path / 't.md'))
    assert json.loads((tmp_path / 't.json').read_text()) == json.loads(json.dumps(table))
    md = (tmp_path / 't.md').read_text()
    assert '| digit | 12 | 0 | 0.5000 | 0.5000 | 1.0000 | 0.6667 | 0.3333 | - |' in md
    assert 'legacy Dice/2' in md


class LinearReluSAE(torch.nn.Module):
    """A stand-in SAE: ``h = relu(W x + b)``, ``x_hat = D h``."""

    def __init__(self, d_in, n, seed=0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.enc = torch.nn.Linear(d_in, n)
        self.dec = torch.nn.Linear(n, d_in, bias=False)
        with torch.no_grad():
            self.enc.weight.copy_(torch.randn(n, d_in, generator=gen) / d_in ** 0.5)
            self.enc.bias.zero_()
            self.dec.weight.copy_(torch.randn(d_in, n, generator=gen) / n ** 0.5)

    def encode(self, x):
        return torch.relu(self.enc(x))

    def decode(self, h):
        return self.dec(h)


class IdentitySAE(torch.nn.Module):
    """``encode`` = identity, ``decode`` = identity: the reconstruction is exact."""

    def encode(self, x):
        return x

    def decode(self, h):
        return h


class NarrowSAE(IdentitySAE):
    """Decodes to 8 channels: not an SAE of this block."""

    def decode(self, h):
        return h[:, :8]


def test_latent_maps_follow_token_order():
    sae = LinearReluSAE(4, 6)
    feats = torch.randn(2, 4, 3, 5)
    maps = alignment.latent_maps(sae, feats, batch_tokens=7)
    assert maps.shape == (2, 6, 3, 5)
    torch.testing.assert_close(maps[1, :, 2, 4], sae.encode(feats[1, :, 2, 4]))
    masks = torch.randint(0, 3, (2, 6, 10))
    acc = alignment.align_dataset(sae, [(feats, masks)], num_classes=3)
    assert acc.pixels == 120 and acc.num_latents == 6


# --------------------------------------------------------------------------------------- splice
def test_splice_identity_is_exact_and_zeros_are_worse(setup):
    from diffusers import DDPMScheduler, UNet2DModel
    unet = UNet2DModel.from_pretrained(osp.join(setup['ddpm'], 'unet')).eval()
    sched = DDPMScheduler.from_pretrained(osp.join(setup['ddpm'], 'scheduler'))
    images = torch.stack([load_square_image(osp.join(setup['images'], f'img{i}.png'), SIZE)
                          for i in range(3)])
    res = splice.splice_fidelity(unet, LAYER, IdentitySAE(), images, 200, sched, seed=3)
    # the unmodified MSE, computed here without any hook
    eps = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    t = torch.full((3, ), 200)
    x_t = sched.add_noise(images, eps.expand(3, -1, -1, -1), t)
    with torch.no_grad():
        plain = float(((unet(x_t, t).sample - eps) ** 2).mean())
    assert res['mse']['original'] == pytest.approx(plain, rel=1e-6)
    assert res['mse']['sae'] == res['mse']['original']
    assert res['feature_mse'] == 0 and res['feature_fve'] == 1
    assert res['mse']['zeros'] > res['mse']['original']
    assert res['recovered'] == 1.0
    lossy = splice.splice_fidelity(unet, LAYER, LinearReluSAE(64, 128), images, 200, sched,
                                   seed=3)
    assert lossy['mse']['original'] == res['mse']['original']
    assert lossy['mse']['sae'] != res['mse']['original'] and lossy['feature_mse'] > 0
    assert lossy['recovered'] == pytest.approx(
        (lossy['mse']['zeros'] - lossy['mse']['sae'])
        / (lossy['mse']['zeros'] - lossy['mse']['original']))
    with pytest.raises(splice.SpliceError, match=r'maps tokens \(192, 64\) to \(192, 8\).*width '
                                                 r'C=64'):
        splice.splice_fidelity(unet, LAYER, NarrowSAE(), images, 200, sched, modes=('sae', ))
    with pytest.raises(splice.SpliceError, match=r"modes \['nothing'\] are not among"):
        splice.splice_fidelity(unet, LAYER, None, images, 200, sched, modes=('nothing', ))


# -------------------------------------------------------------------------------------- probe
def test_probe_pieces_match_independent_computations():
    feats = torch.randn(5, 3, 4)
    up = F.interpolate(feats[None], size=(12, 16), mode='bilinear', align_corners=False)[0]
    ys, xs = torch.tensor([0, 5, 11, 7]), torch.tensor([0, 15, 3, 8])
    torch.testing.assert_close(probe.bilinear_at(feats, ys, xs, (12, 16)), up[:, ys, xs].t())
    conf = torch.tensor([[3, 1, 0], [2, 4, 0], [0, 0, 0]])  # class 2 absent everywhere
    s = probe.scores(conf)
    assert s['accuracy'] == pytest.approx(7 / 10)
    assert s['iou'][:2] == pytest.approx([3 / 6, 4 / 7])
    assert s['miou'] == pytest.approx((3 / 6 + 4 / 7) / 2)
    assert s['miou_absent_zero'] == pytest.approx((3 / 6 + 4 / 7) / 3)
    mask = np.arange(16).reshape(4, 4)
    assert probe.resize_mask_nearest(mask, 2).tolist() == [[0, 2], [8, 10]]
    assert probe.resize_mask_nearest(mask, 8)[:, :3].tolist()[:2] == [[0, 0, 1], [0, 0, 1]]


# -------------------------------------------------------------------------------------- figures
def test_class_figures_are_written(tmp_path):
    from PIL import Image
    maps, mask = hand_example()
    images = torch.rand(2, 3, 4, 4) * 2 - 1
    acc = alignment.MaskAlignment(3, 2, dense_fraction=0.5)
    acc.update(torch.cat([maps, maps]), torch.cat([mask, mask]))
    paths = figures.class_figures(images, torch.cat([mask, mask]), torch.cat([maps, maps]),
                                  acc.table(['bg', 'fg']), str(tmp_path), top_k=2)
    assert [osp.basename(p) for p in paths] == ['class000_bg.png', 'class001_fg.png']
    with Image.open(paths[1]) as im:
        assert im.format == 'PNG' and im.width > im.height  # 2 rows x 3 columns
    assert sorted(os.listdir(tmp_path)) == ['class000_bg.png', 'class001_fg.png']  # no temp


# ---------------------------------------------------------------------------------------- tools
TOOLS = {
    'tools/collect_sae_features.py': (['cfg.py', '--out', 'o', '--shard-size', '0'],
                                      '--shard-size must be at least 1, got 0'),
    'tools/analysis/sae_timestep_sweep.py': (['cfg.py', '--train', 'a', '--test', 'b'],
                                             'the following arguments are required: '
                                             '--num-classes'),
    'tools/analysis/sae_mask_alignment.py': (['cfg.py', 'sae.safetensors', '--data', 'd',
                                              '--num-classes', '2', '--dense-fraction', '1.5'],
                                             r'--dense-fraction must be in (0, 1], got 1.5'),
}


@pytest.mark.parametrize('tool', sorted(TOOLS))
def test_tool_help_imports_nothing_heavy_and_argument_errors(tool):
    path = osp.join(REPO_ROOT, tool)
    proc = subprocess.run([sys.executable, '-X', 'importtime', path, '--help'],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith('usage:')
    imported = {line.split('|')[-1].strip().split('.')[0] for line in proc.stderr.splitlines()
                if line.startswith('import time:')}
    assert not imported & {'torch', 'mmengine', 'transformers', 'diffusers', 'common',
                           'segmentation', 'matplotlib'}
    argv, message = TOOLS[tool]
    proc = subprocess.run([sys.executable, path] + argv, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f'{tool}: error: {message}; see {tool} --help'


def write_config(path, text):
    with open(path, 'w') as f:
        f.write(text)
    return str(path)


def test_collect_tool_writes_and_resumes(setup, tmp_path, tools_kit, capsys):
    tool = tools_kit.load('collect_sae_features')
    cfg = write_config(tmp_path / 'cfg.py', f'teacher = {teacher_cfg(setup["ddpm"])!r}\n'
                       f'sae_features = dict(size={SIZE})\n')
    out = str(tmp_path / 'out')
    argv = [cfg, '--images', setup['images'], '--out', out, '--shard-size', '4', '--device',
            'cpu', '--num-images', '3']
    assert tool._cli.run_cli(tool.PROG, tool.main, argv) == 0
    assert '1 new shard(s), 3 images in complete shards' in capsys.readouterr().out
    assert len(SAEFeatureShards(out)) == 3
    assert tool._cli.run_cli(tool.PROG, tool.main, argv) == 0
    assert '0 new shard(s), 3 images in complete shards' in capsys.readouterr().out
    bad = write_config(tmp_path / 'bad.py', f'teacher = {teacher_cfg(setup["ddpm"])!r}\n'
                       f'sae_features = dict(size={SIZE}, image_dir="x")\n')
    assert tool._cli.run_cli(tool.PROG, tool.main, [bad, '--out', out]) == 2
    assert "sae_features has unknown key(s) ['image_dir']" in capsys.readouterr().err
    # block=1: the teacher's layer is output_blocks[1]'s module path in the converted UNet
    from segmentation.pixel_features.adm_blocks import adm_output_block_path
    unet_cfg = json.load(open(osp.join(setup['ddpm'], 'unet', 'config.json')))
    no_layer = {k: v for k, v in teacher_cfg(setup['ddpm']).items() if k != 'layers'}
    by_block = write_config(tmp_path / 'block.py', f'teacher = {no_layer!r}\n'
                            f'sae_features = dict(size={SIZE}, block=1)\n')
    out2 = str(tmp_path / 'out2')
    assert tool._cli.run_cli(tool.PROG, tool.main, [by_block, '--images', setup['images'],
                                                    '--out', out2, '--num-images', '2']) == 0
    layer = adm_output_block_path(unet_cfg, 1)
    assert SAEFeatureShards(out2).settings['layer'] == layer != LAYER
    clash = write_config(tmp_path / 'clash.py', f'teacher = {teacher_cfg(setup["ddpm"])!r}\n'
                         f'sae_features = dict(size={SIZE}, block=1)\n')
    capsys.readouterr()
    assert tool._cli.run_cli(tool.PROG, tool.main, [clash, '--images', setup['images'],
                                                    '--out', out2]) == 2
    assert f"sae_features.block=1 is '{layer}' in this UNet, but teacher.layers" in \
        capsys.readouterr().err


def test_timestep_sweep_tool_end_to_end(setup, tmp_path, tools_kit, capsys):
    tool = tools_kit.load('analysis/sae_timestep_sweep')
    cfg = write_config(tmp_path / 'cfg.py', f'teacher = {teacher_cfg(setup["ddpm"])!r}\n')
    out = str(tmp_path / 'sweep')
    argv = [cfg, '--train', setup['train'], '--test', setup['test'], '--num-classes', '2',
            '--timesteps', '500', '10', '--size', str(SIZE), '--pixels-per-image', '64',
            '--probe-steps', '30', '--device', 'cpu', '--out', out]
    assert tool._cli.run_cli(tool.PROG, tool.main, argv) == 0
    record = json.load(open(osp.join(out, 'sweep.json')))
    assert [r['timestep'] for r in record['results']] == [10, 500]
    assert record['feature_shape'] == [64, 8, 8] and record['num_train'] == 4
    assert record['best_timestep'] == max(record['results'], key=lambda r: r['miou'])['timestep']
    for r in record['results']:
        assert r['train_pixels'] == 4 * 64 and 0 <= r['miou'] <= r['accuracy'] <= 1
    # bright squares on dark noise: the block features at t=10 separate them
    assert record['results'][0]['accuracy'] > 0.8
    with open(osp.join(out, 'sweep.png'), 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    os.remove(osp.join(setup['test'], 'img2.npy'))
    try:
        assert tool._cli.run_cli(tool.PROG, tool.main, argv) == 1
        assert 'img2.npy: expected the class mask of img2.png' in capsys.readouterr().err
    finally:
        write_pngs(setup['test'], 3, seed=2, masks=True)


def test_mask_alignment_tool_end_to_end(setup, tmp_path, tools_kit, capsys):
    from segmentation.sae import ReluSAE, save_sae
    tool = tools_kit.load('analysis/sae_mask_alignment')
    sae_cfg = dict(type='ReluSAE', d_in=64, d_sae=32)
    cfg = write_config(tmp_path / 'cfg.py', f'teacher = {teacher_cfg(setup["ddpm"])!r}\n'
                       f'sae = {sae_cfg!r}\n')
    torch.manual_seed(0)
    sae = ReluSAE(d_in=64, d_sae=32)
    ckpt = save_sae(sae, str(tmp_path / 'sae.safetensors'))
    out = str(tmp_path / 'align')
    argv = [cfg, ckpt, '--data', setup['train'], '--num-classes', '2', '--class-names', 'bg',
            'square', '--size', str(SIZE), '--figures', '2', '--device', 'cpu', '--out', out]
    assert tool._cli.run_cli(tool.PROG, tool.main, argv) == 0
    table = json.load(open(osp.join(out, 'alignment.json')))
    # the same numbers computed here from the same SAE and the collected block features
    teacher = build_teacher(teacher_cfg(setup['ddpm']))
    _, images, masks = probe.read_labelled_folder(setup['train'], SIZE)
    feats = teacher(images)[f'{LAYER}@50']
    acc = alignment.align_dataset(sae.eval(), [(feats, masks)], num_classes=2)
    expected = acc.table(['bg', 'square'])
    assert table['num_images'] == 4 and table['layer'] == LAYER
    for got, want in zip(table['classes'], expected['classes']):
        assert got['best_latent'] == want['best_latent']
        assert got['best_iou'] == pytest.approx(want['best_iou'])
    assert osp.isfile(osp.join(out, 'alignment.md'))
    assert any(f.endswith('.png') for f in os.listdir(out))


def test_train_sae_tool_is_seeded_holds_out_images_and_reports(setup, tmp_path, tools_kit,
                                                               capsys):
    collect = tools_kit.load('collect_sae_features')
    cfg = write_config(tmp_path / 'cfg.py', f'teacher = {teacher_cfg(setup["ddpm"])!r}\n'
                       f'sae_features = dict(size={SIZE})\n'
                       "sae = dict(type='TopKSAE', d_in=64, d_sae=128, k=4)\n"
                       'sae_train = dict(steps=6, lr=1e-3, images_per_batch=2, seed=3, '
                       'log_interval=2, eval_fraction=0.4)\n')
    tokens = str(tmp_path / 'tokens')
    assert collect._cli.run_cli(collect.PROG, collect.main, [
        cfg, '--images', setup['images'], '--out', tokens, '--device', 'cpu']) == 0
    train = tools_kit.load('train_sae')
    runs = []
    for name in ('a', 'b'):
        wd = str(tmp_path / name)
        assert train._cli.run_cli(train.PROG, train.main, [
            cfg, '--features', tokens, '--work-dir', wd, '--device', 'cpu']) == 0
        with open(osp.join(wd, 'sae_metrics.json')) as f:
            runs.append(json.load(f))
        assert osp.isfile(osp.join(wd, 'feature_density.png'))
    a, b = runs
    assert a['eval'] == b['eval'] and a['steps'] == 6  # seeded: the same SAE twice
    assert (a['train_images'], a['eval_images']) == (3, 2)  # 5 images, 40 % held out
    # the held-out metrics are the SAE's on the last two images' tokens, recomputed here
    from segmentation.sae import TopKSAE, evaluate_sae, load_sae
    shards = SAEFeatureShards(tokens)
    sae = TopKSAE(64, 128, 4)
    load_sae(a['checkpoint'], sae)
    held = torch.cat([shards.tokens(k).float() for k in shards.keys()[3:]])
    again = evaluate_sae(sae.eval(), [held])
    assert a['eval']['fve'] == pytest.approx(again['fve'], rel=1e-5)
    assert a['eval']['num_dead'] == len(again['dead'])
    bad = write_config(tmp_path / 'bad.py', f'teacher = {teacher_cfg(setup["ddpm"])!r}\n'
                       "sae = dict(type='TopKSAE', d_in=64, d_sae=128, k=4)\n"
                       'sae_train = dict(step=5)\n')
    capsys.readouterr()
    assert train._cli.run_cli(train.PROG, train.main, [
        bad, '--features', tokens, '--work-dir', str(tmp_path / 'c')]) == 2
    assert "sae_train has unknown keys ['step']" in capsys.readouterr().err
