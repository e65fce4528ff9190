"""tools/generate_samples.py (grids, PNGs per seed, teachers) and tools/export_generator.py.

The tools run in this process (``tools_kit.load``) on tiny EDM networks (8 x 8 images, 16
channels, one level), so the whole file takes a few seconds on a CPU.
"""
import numpy as np
import pytest
import torch
from PIL import Image

from generation_dmd.generator import OneStepGenerator, load_generator, save_generator, to_uint8
from generation_dmd.networks import EDMPrecond, save_edm
from generation_dmd.pairs import pair_latents
from generation_dmd.sampling import edm_sampler

TINY_SONG = dict(model_channels=16, channel_mult=[1], num_blocks=1, attn_resolutions=[],
                 dropout=0.0)


def tiny_edm(label_dim=3, seed=0):
    """A tiny EDMPrecond(SongUNet) with O(1) random weights (EDM zero-initialises the output
    layer, which would make every image the same grey)."""
    torch.manual_seed(seed)
    net = EDMPrecond(8, 3, label_dim=label_dim, model_type='SongUNet', **TINY_SONG).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return net


def png(path):
    """A PNG as a uint8 tensor [C, H, W]."""
    return torch.from_numpy(np.array(Image.open(path).convert('RGB'))).permute(2, 0, 1)


@pytest.fixture(scope='module')
def samples_tool(tools_kit):
    return tools_kit.load('generate_samples')


# ------------------------------------------------------------------------------ seeds syntax
def test_seed_lists_follow_edm_syntax(samples_tool):
    parse = samples_tool.parse_int_list
    assert parse('0-3') == [0, 1, 2, 3]
    assert parse('0,5,9-12') == [0, 5, 9, 10, 11, 12]
    assert parse(' 7 ') == [7]
    assert parse('2,1,0', what='--class-ids') == [2, 1, 0]
    assert parse('1,1', what='--class-ids') == [1, 1]  # repeated class ids are fine
    with pytest.raises(ValueError, match=r"--seeds '5-3': the range '5-3' runs backwards; write "
                                         r'it as 3-5'):
        parse('5-3')
    with pytest.raises(ValueError, match=r"--seeds '1,,2': '' is not a number or a range"):
        parse('1,,2')
    with pytest.raises(ValueError, match=r"--seeds '0-2,x': 'x' is not a number"):
        parse('0-2,x')
    with pytest.raises(ValueError, match=r"--seeds '-1': '-1' is not a number or a range"):
        parse('-1')
    with pytest.raises(ValueError, match=r"--seeds '0-3,2': seed 2 is given twice"):
        parse('0-3,2')


def test_argument_errors_exit_2_before_any_work(samples_tool, tmp_path, capsys):
    main = samples_tool.main
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path), '--out', 'g.png', '--seeds', '3-1'])
    assert exc.value.code == 2
    assert "argument --seeds: the range '3-1' runs backwards" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path), '--seeds', '0-3'])
    assert 'nothing to write: pass --out GRID.png, --out-dir DIR or both' in \
        capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path / 'missing'), '--out', 'g.png'])
    assert 'is not a folder' in capsys.readouterr().err


# ------------------------------------------------------------------------------ generator
@pytest.fixture(scope='module')
def generator_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp('gen') / 'generator'
    save_generator(OneStepGenerator(tiny_edm(), sigma=80.0), folder)
    return folder


def test_grid_and_per_seed_pngs_equal_to_uint8_of_generate(samples_tool, generator_folder,
                                                           tmp_path, capsys):
    grid_path, out_dir = tmp_path / 'grid.png', tmp_path / 'pngs'
    code = samples_tool.main([str(generator_folder), '--out', str(grid_path), '--seeds',
                              '3,5-8', '--class-ids', 'balanced', '--nrow', '2', '--out-dir',
                              str(out_dir), '--device', 'cpu', '--batch-size', '2'])
    assert code == 0
    printed = capsys.readouterr().out
    assert 'one-step generator, 5 images (3, 8, 8) on cpu' in printed
    assert 'images/s (1 network evaluation per image, batch 2)' in printed
    seeds = [3, 5, 6, 7, 8]
    expected = to_uint8(load_generator(generator_folder).generate(
        seeds, [s % 3 for s in seeds], batch_size=2))
    assert len(torch.unique(expected)) > 50  # real images, not one grey
    grid = png(grid_path)
    assert grid.shape == (3, 3 * 8, 2 * 8)  # 5 images, 2 per row -> 3 rows
    for k in range(5):
        r, c = divmod(k, 2)
        assert torch.equal(grid[:, 8 * r:8 * r + 8, 8 * c:8 * c + 8], expected[k]), k
    assert not grid[:, 16:, 8:].any()  # the empty sixth cell stays black
    assert sorted(p.name for p in out_dir.iterdir()) == [f'{s:06d}.png' for s in seeds]
    for seed, image in zip(seeds, expected):
        assert torch.equal(png(out_dir / f'{seed:06d}.png'), image)


def test_class_id_options(samples_tool):
    pick = samples_tool.class_ids_for
    from generation_dmd.datasets.seeds import GenerationSeedsDataset
    dataset = GenerationSeedsDataset(12, first_seed=0, num_classes=5, labels='random')
    random_ids = pick(list(range(12)), 'random', 5, 'src')
    assert random_ids == [int(c) for c in dataset.class_ids]  # the test loop's labels
    assert len(set(random_ids)) > 1
    assert pick([7, 3], 'random', 5, 'src') == [random_ids[7], random_ids[3]]  # seed alone
    assert pick([4, 9], 'balanced', 5, 'src') == [4, 4]
    assert pick([4, 9, 11], [2], 5, 'src') == [2, 2, 2]
    cli = samples_tool._cli
    with pytest.raises(cli.RunError, match=r'--class-ids gives 2 ids for 3 seeds'):
        pick([4, 9, 11], [1, 2], 5, 'src')
    with pytest.raises(cli.RunError, match=r'--class-ids: 5 is not a class of SOURCE src, which '
                                           r'has 5 classes \(ids 0-4\)'):
        pick([4], [5], 5, 'src')
    assert pick([1, 2], None, None, 'src') is None


def test_class_ids_required_iff_conditional(samples_tool, generator_folder, tmp_path, capsys):
    args = ['--out', str(tmp_path / 'g.png'), '--seeds', '0-1', '--device', 'cpu']
    assert samples_tool.main([str(generator_folder), *args]) == 1
    err = capsys.readouterr().err
    assert 'is class-conditional (3 classes): pass --class-ids' in err
    assert not (tmp_path / 'g.png').exists()
    uncond = tmp_path / 'uncond'
    save_generator(OneStepGenerator(tiny_edm(label_dim=0)), uncond)
    assert samples_tool.main([str(uncond), *args, '--class-ids', '1']) == 1
    assert 'is unconditional, but --class-ids [1] was given; drop --class-ids' in \
        capsys.readouterr().err
    assert samples_tool.main([str(generator_folder), *args, '--class-ids', '0', '--steps',
                              '4']) == 2
    assert '--steps applies to teacher folders' in capsys.readouterr().err


def test_unknown_folder_names_the_accepted_kinds(samples_tool, tmp_path, capsys):
    (tmp_path / 'notes.txt').write_text('x')
    assert samples_tool.main([str(tmp_path), '--out', str(tmp_path / 'g.png')]) == 1
    err = capsys.readouterr().err
    assert 'is none of the folders this tool samples: expected a generator folder ' \
        '(generator.json' in err
    assert 'a diffusers DDPM pipeline folder' in err and 'it holds notes.txt' in err


# ------------------------------------------------------------------------------ teachers
def test_teacher_folder_is_sampled_with_edms_heun_sampler(samples_tool, tmp_path, capsys):
    net = tiny_edm()
    save_edm(net, tmp_path / 'teacher')
    code = samples_tool.main([str(tmp_path / 'teacher'), '--out', str(tmp_path / 'g.png'),
                              '--seeds', '10-13', '--class-ids', '2,0,1,1', '--steps', '2',
                              '--nrow', '4', '--device', 'cpu'])
    assert code == 0
    assert 'EDM teacher, Heun 2 steps' in capsys.readouterr().out
    with torch.no_grad():
        images = edm_sampler(net, pair_latents([10, 11, 12, 13], (3, 8, 8)),
                             torch.eye(3)[[2, 0, 1, 1]], num_steps=2)
    expected = torch.cat(list(to_uint8(images)), dim=2)  # one row of four
    assert torch.equal(png(tmp_path / 'g.png'), expected)


def test_ddpm_pipeline_folder_is_sampled_through_diffusers_denoiser(samples_tool, tmp_path,
                                                                     capsys):
    from generation_dmd.adapters import DiffusersDenoiser
    from tests.helpers.tiny_models import save_ddpm_pipeline
    folder = save_ddpm_pipeline(str(tmp_path / 'ddpm'), sample_size=8)
    code = samples_tool.main([folder, '--out', str(tmp_path / 'g.png'), '--seeds', '0-1',
                              '--steps', '2', '--device', 'cpu'])
    assert code == 0
    assert 'diffusers DDPM teacher, Heun 2 steps, 2 images (3, 8, 8)' in capsys.readouterr().out
    teacher = DiffusersDenoiser(pretrained=folder).eval()
    with torch.no_grad():
        images = edm_sampler(teacher, pair_latents([0, 1], (3, 8, 8)), None, num_steps=2)
    assert torch.equal(png(tmp_path / 'g.png'), torch.cat(list(to_uint8(images)), dim=2))


# ------------------------------------------------------------------------------ export
@pytest.fixture(scope='module')
def export_tool(tools_kit):
    return tools_kit.load('export_generator')


def write_config(folder, teacher_dir, ema_decay=0.5):
    path = folder / f'dmd_tiny_ema{ema_decay}.py'
    path.write_text(
        "default_scope = 'mmengine'\n"
        "custom_imports = dict(imports=['generation_dmd', 'generation_dmd.distiller'], "
        "allow_failed_imports=False)\n"
        f"teacher = dict(type='load_edm', folder={str(teacher_dir)!r})\n"
        f"model = dict(type='DMDDistiller', teacher=teacher, ema_decay={ema_decay}, "
        "dropout=0.0)\n")
    return str(path)


def make_checkpoint(path, teacher_dir, ema_decay=0.5, iteration=1234):
    """A DMDDistiller checkpoint as mmengine writes it, with generator and EMA weights that
    differ from the teacher and from each other."""
    from common.io.checkpoint import save_checkpoint
    from generation_dmd.distiller import DMDDistiller
    from generation_dmd.networks import load_edm
    distiller = DMDDistiller(load_edm(teacher_dir), ema_decay=ema_decay, dropout=0.0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name in ('generator', 'generator_ema'):
            module = getattr(distiller, name)
            for p in (module.parameters() if module is not None else []):
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    save_checkpoint({'state_dict': distiller.state_dict(),
                     'meta': {'iter': iteration, 'epoch': 0}}, str(path))
    return distiller


@pytest.fixture(scope='module')
def dmd_run(tmp_path_factory):
    """A teacher folder, a config training it with EMA, and a checkpoint of that training."""
    root = tmp_path_factory.mktemp('dmd')
    save_edm(tiny_edm(), root / 'teacher')
    config = write_config(root, root / 'teacher')
    distiller = make_checkpoint(root / 'iter_1234.pth', root / 'teacher')
    return root, config, str(root / 'iter_1234.pth'), distiller


def test_export_writes_the_ema_generator_by_default(export_tool, dmd_run, tmp_path, capsys):
    import hashlib
    import json
    root, config, ckpt, distiller = dmd_run
    out = tmp_path / 'gen'
    assert export_tool.main([config, ckpt, str(out)]) == 0
    printed = capsys.readouterr().out
    assert 'used the generator_ema.* weights (the default: the checkpoint has them)' in printed
    assert 'iteration 1234' in printed
    loaded = load_generator(out)
    seeds, ids = [0, 1, 2, 7], [0, 1, 2, 2]
    expected = distiller.generator_ema.eval().generate(seeds, ids)
    assert torch.equal(loaded.generate(seeds, ids), expected)
    assert not torch.equal(distiller.generator.eval().generate(seeds, ids), expected)
    meta = json.loads((out / 'generator.json').read_text())['metadata']
    with open(ckpt, 'rb') as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    assert meta['source_sha256'] == digest and meta['iteration'] == '1234'
    assert meta['weights'] == 'generator_ema.*' and meta['source_checkpoint'].endswith(
        'iter_1234.pth')
    # --weights generator: the raw generator
    assert export_tool.main([config, ckpt, str(tmp_path / 'raw'), '--weights',
                             'generator']) == 0
    assert 'used the generator.* weights of' in capsys.readouterr().out
    assert torch.equal(load_generator(tmp_path / 'raw').generate(seeds, ids),
                       distiller.generator.generate(seeds, ids))


def test_export_errors_write_nothing(export_tool, dmd_run, tmp_path, capsys):
    from common.io.checkpoint import save_checkpoint
    root, config, ckpt, _ = dmd_run
    out = tmp_path / 'gen'
    # not a DMD checkpoint: list what it has
    other = tmp_path / 'classifier.pth'
    save_checkpoint({'state_dict': {'backbone.conv.weight': torch.zeros(2),
                                    'backbone.conv.bias': torch.zeros(2),
                                    'head.fc.weight': torch.zeros(2)}}, str(other))
    assert export_tool.main([config, str(other), str(out)]) == 1
    err = capsys.readouterr().err
    assert 'is not a DMD checkpoint: it has no generator.* (or generator_ema.*) weights; it ' \
        'holds backbone.* (2 keys), head.* (1 key)' in err
    # --weights ema from a training without EMA
    plain = tmp_path / 'plain.pth'
    make_checkpoint(plain, root / 'teacher', ema_decay=None)
    assert export_tool.main([config, str(plain), str(out), '--weights', 'ema']) == 1
    assert '--weights ema: ' in capsys.readouterr().err
    # the default falls back to generator.* and says so
    assert export_tool.main([config, str(plain), str(tmp_path / 'g2')]) == 0
    assert 'the checkpoint has no generator_ema.* weights' in capsys.readouterr().out
    # the config's teacher folder must exist
    missing = write_config(tmp_path, tmp_path / 'no_teacher')
    assert export_tool.main([missing, ckpt, str(out)]) == 1
    assert 'no_teacher does not exist' in capsys.readouterr().err
    # a checkpoint of another architecture
    other_teacher = tmp_path / 'wide'
    save_edm(EDMPrecond(8, 3, label_dim=3, model_type='SongUNet',
                        **dict(TINY_SONG, model_channels=32)), other_teacher)
    assert export_tool.main([write_config(tmp_path, other_teacher), ckpt, str(out)]) == 1
    err = capsys.readouterr().err
    assert 'The generator_ema.* weights of' in err and 'do not fit the generator CONFIG ' \
        'builds' in err
    assert 'have another shape (generator_ema.net.model.' in err
    assert not out.exists()
    # an existing OUT_DIR needs --overwrite (a usage error, before any work)
    with pytest.raises(SystemExit) as exc:
        export_tool.main([config, ckpt, str(tmp_path / 'g2')])
    assert exc.value.code == 2
    assert 'already exists; pass --overwrite' in capsys.readouterr().err
