"""Teacher-feature shards (correspondence/datasets/teacher_shards.py), the precompute tool and the
extractor wrappers of the DistillDIFT teacher config, on a tiny random DINOv2-with-registers and a
few tiny PNGs (two of them share a basename in different folders: keys are relative paths)."""
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch

from correspondence.datasets.teacher_shards import (LoadTeacherFeatures, TeacherShardError,
                                                    TeacherShards, config_digest, list_images,
                                                    load_frame, make_compute, write_shards)
from correspondence.datasets.transforms import LoadImagePair, ResizePair
from correspondence.datasets.unlabeled import DINOv2ClsEmbedder
from correspondence.models.extractors import DINOv2Extractor
from tests.helpers.tiny_models import save_dinov2_models

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(REPO_ROOT, 'tools', 'precompute_teacher_features.py')
TINY_CFG = osp.join(REPO_ROOT, 'tests', 'fixtures', 'configs', 'tiny-dinov2-reg_precompute.py')
IMAGES = {'cat/a.png': (30, 40), 'cat/b.png': (45, 28), 'dog/a.png': (28, 28),
          'dog/c.png': (50, 33), 'dog/d.png': (29, 31)}
SIZE = (28, 28)


def write_images(root, images=IMAGES, seed=0):
    from PIL import Image
    rng = np.random.default_rng(seed)
    for key, (w, h) in images.items():
        os.makedirs(osp.join(root, osp.dirname(key)), exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(osp.join(root, key))
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(osp.join(root, 'notes.jpg'))  # skipped
    return root


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp('shards')
    models = save_dinov2_models(str(base / 'models'))
    root = write_images(str(base / 'images'))
    teacher = DINOv2Extractor(pretrained=models['reg'], layer=-1)
    embedder = DINOv2ClsEmbedder(pretrained=models['reg'])
    keys = list_images(root, ('.png',))
    settings = dict(teacher=config_digest(dict(type='DINOv2Extractor', layer=-1)),
                    embedder='cls', frame='stretched', size=list(SIZE))
    return dict(base=base, models=models, root=root, teacher=teacher, embedder=embedder,
                keys=keys, settings=settings)


def _write(s, out, compute=None, **kwargs):
    compute = compute or make_compute(s['teacher'], s['root'], 'stretched', SIZE, s['embedder'])
    return write_shards(str(out), s['keys'], compute, s['settings'], **kwargs)


def _direct(s, key):
    """The teacher's features of ``key`` through the pair pipeline's own steps."""
    pair = dict(src_img_path=osp.join(s['root'], key), trg_img_path=osp.join(s['root'], key))
    pair = ResizePair('stretched', SIZE)(LoadImagePair()(pair))
    image = torch.from_numpy(pair['src_img'].transpose(2, 0, 1).copy()).float()[None] / 255
    with torch.no_grad():
        return s['teacher'](image)[0], s['embedder'](image)[0]


def _shard_files(out):
    return sorted(p for p in (out / 'rank000').iterdir() if p.suffix == '.safetensors')


def test_keys_are_relative_paths(setup):
    assert setup['keys'] == sorted(IMAGES)  # 'notes.jpg' has another extension


def test_round_trip_equals_direct_features(setup, tmp_path):
    out = tmp_path / 'out'
    writer = _write(setup, out, shard_size=2, batch_size=2)
    assert len(writer.written) == 3  # 5 images, 2 per shard
    shards = TeacherShards(str(out))
    assert shards.keys() == sorted(IMAGES) and 'cat/a.png' in shards and 'a.png' not in shards
    for key in IMAGES:
        feats, emb = _direct(setup, key)
        got = shards.get(key)
        assert got.dtype == torch.float32 and got.shape == (32, 2, 2)
        torch.testing.assert_close(got, feats, atol=2e-3, rtol=2e-3)  # float16 storage
        torch.testing.assert_close(shards.embedding(key), emb)
    # same basename, different folders: different images, different features
    assert not torch.allclose(shards.get('cat/a.png'), shards.get('dog/a.png'))
    keys, emb = shards.embeddings()
    assert keys == sorted(IMAGES) and emb.shape == (5, 32)
    # the shard JSON: keys in order, shapes, dtype, the file's sha256
    info = json.loads((out / 'rank000' / 'shard-000000.json').read_text())
    assert info['keys'] == sorted(IMAGES)[:2] and info['shapes'] == [[32, 2, 2]] * 2
    assert info['dtype'] == 'float16' and info['embedding_dim'] == 32
    import hashlib
    data = (out / 'rank000' / 'shard-000000.safetensors').read_bytes()
    assert info['sha256'] == hashlib.sha256(data).hexdigest()
    manifest = json.loads((out / 'manifest.json').read_text())
    assert manifest['settings']['world_size'] == 1 and manifest['num_images'] == 5
    assert manifest['settings']['size'] == [28, 28] and manifest['complete']


def test_float32_is_exact_and_frame_matches_resize_pair(setup, tmp_path):
    out = tmp_path / 'f32'
    _write(setup, out, shard_size=10, dtype='float32')
    shards = TeacherShards(str(out))
    feats, _ = _direct(setup, 'dog/c.png')
    assert torch.equal(shards.get('dog/c.png'), feats)
    assert shards.settings['dtype'] == 'float32'


def test_interrupted_run_resumes_without_rewriting(setup, tmp_path):
    full = make_compute(setup['teacher'], setup['root'], 'stretched', SIZE, setup['embedder'])
    calls = []

    def crashing(keys):
        calls.append(list(keys))
        if len(calls) == 4:
            raise RuntimeError('simulated crash')
        return full(keys)

    out = tmp_path / 'out'
    with pytest.raises(RuntimeError, match='simulated crash'):
        _write(setup, out, crashing, shard_size=2)
    first = _shard_files(out)
    assert [p.name for p in first] == ['shard-000000.safetensors']  # image 3 lost in the crash
    assert not (out / 'manifest.json').exists()
    mtime = first[0].stat().st_mtime_ns
    calls.clear()
    writer = _write(setup, out, lambda k: (calls.append(list(k)), full(k))[1], shard_size=2)
    assert calls == [[k] for k in sorted(IMAGES)[2:]]  # only the images not in complete shards
    assert first[0].stat().st_mtime_ns == mtime and len(writer.written) == 2
    reference = tmp_path / 'reference'
    _write(setup, reference, shard_size=2)
    resumed, ref = TeacherShards(str(out)), TeacherShards(str(reference))
    for key in IMAGES:
        assert torch.equal(resumed.get(key), ref.get(key))


def test_deleted_shard_is_recomputed_alone(setup, tmp_path):
    out = tmp_path / 'out'
    _write(setup, out, shard_size=2)
    files = _shard_files(out)
    mtimes = {p.name: p.stat().st_mtime_ns for p in files}
    deleted = json.loads((out / 'rank000' / 'shard-000001.json').read_text())['keys']
    files[1].unlink()  # the user deletes a shard file; its JSON is left behind
    calls = []
    full = make_compute(setup['teacher'], setup['root'], 'stretched', SIZE, setup['embedder'])
    _write(setup, out, lambda k: (calls.append(list(k)), full(k))[1], shard_size=2)
    assert calls == [[k] for k in deleted]
    for name in ('shard-000000.safetensors', 'shard-000002.safetensors'):
        assert (out / 'rank000' / name).stat().st_mtime_ns == mtimes[name]
    assert not (out / 'rank000' / 'shard-000001.json').exists()
    shards = TeacherShards(str(out))
    assert shards.keys() == sorted(IMAGES)
    torch.testing.assert_close(shards.get(deleted[0]), _direct(setup, deleted[0])[0],
                               atol=2e-3, rtol=2e-3)


def test_changed_settings_are_refused(setup, tmp_path):
    out = tmp_path / 'out'
    _write(setup, out, shard_size=4)
    with pytest.raises(TeacherShardError, match=r"written with dtype='float16'.*this run has "
                                                r"dtype='float32'.*new output folder"):
        _write(setup, out, shard_size=4, dtype='float32')
    other = dict(setup, settings=dict(setup['settings'], teacher='other-digest'))
    with pytest.raises(TeacherShardError, match=r"teacher=.*this run has teacher='other-digest'"):
        _write(other, out)
    with pytest.raises(TeacherShardError, match=r'world_size=1 .*world_size=2'):
        _write(setup, out, rank=1, world_size=2)


def test_corrupt_shard_names_it_and_the_fix(setup, tmp_path):
    out = tmp_path / 'out'
    _write(setup, out, shard_size=2)
    shard = out / 'rank000' / 'shard-000001.safetensors'
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF
    shard.write_bytes(bytes(data))
    shards = TeacherShards(str(out))
    shards.get(sorted(IMAGES)[0])  # other shards still read
    with pytest.raises(TeacherShardError, match=r'shard-000001\.safetensors: expected a teacher-'
                       r'feature shard with sha256 .* corrupt or truncated\. Delete .* run '
                       r'tools/precompute_teacher_features\.py again .* recomputes just that '
                       r"shard's 2 images"):
        shards.get(sorted(IMAGES)[2])
    # verify='size' skips the hash: a flipped byte passes, a truncated shard does not
    assert TeacherShards(str(out), verify='size').get(sorted(IMAGES)[2]).shape == (32, 2, 2)
    shard.write_bytes(bytes(data[:-5]))
    with pytest.raises(TeacherShardError, match=r'shard of \d+ bytes, but the file has \d+: it '
                                                r'is truncated or corrupt\. Delete'):
        TeacherShards(str(out), verify='size').get(sorted(IMAGES)[2])


def test_shards_pickle_without_open_handles(setup, tmp_path):
    import pickle
    out = tmp_path / 'out'
    _write(setup, out, shard_size=2)
    shards = TeacherShards(str(out))
    first = shards.get('dog/c.png')
    copy = pickle.loads(pickle.dumps(shards))  # a data loader worker's copy
    assert copy._open == {} and torch.equal(copy.get('dog/c.png'), first)


def test_two_ranks_split_the_images(setup, tmp_path):
    out = tmp_path / 'out'
    with pytest.raises(TeacherShardError,
                       match=r'2 of 5 images have no teacher features yet \(first: .cat/b.png.\)'):
        _write(setup, out, rank=0, world_size=2, shard_size=2)
    _write(setup, out, rank=1, world_size=2, shard_size=2)
    _write(setup, out, rank=0, world_size=2, shard_size=2)  # resumes, then writes the manifest
    rank_keys = {r: [k for p in sorted((out / f'rank{r:03d}').glob('*.json')) if 'shard' in p.name
                     for k in json.loads(p.read_text())['keys']] for r in (0, 1)}
    assert rank_keys == {0: setup['keys'][0::2], 1: setup['keys'][1::2]}
    manifest = json.loads((out / 'manifest.json').read_text())
    assert manifest['settings']['world_size'] == 2 and len(manifest['shards']) == 3
    ref = tmp_path / 'ref'
    _write(setup, ref, shard_size=2)
    a, b = TeacherShards(str(out)), TeacherShards(str(ref))
    for key in IMAGES:
        assert torch.equal(a.get(key), b.get(key))


def test_load_teacher_features(setup, tmp_path):
    out = tmp_path / 'out'
    _write(setup, out, shard_size=3)
    step = LoadTeacherFeatures(str(out))
    results = step(dict(src_teacher_key='cat/b.png', trg_teacher_key='dog/d.png'))
    assert torch.equal(results['trg_teacher'], TeacherShards(str(out)).get('dog/d.png'))
    with pytest.raises(TeacherShardError, match=r"'b.png': expected an image key .* no such "
                                                r'key \(5 images\)'):
        step(dict(src_teacher_key='b.png', trg_teacher_key='dog/d.png'))
    with pytest.raises(KeyError, match='needs .trg_teacher_key. in the pair dict'):
        step(dict(src_teacher_key='cat/b.png'))
    with pytest.raises(TeacherShardError, match=r'manifest.json: expected the manifest .* run '
                                                r'tools/precompute_teacher_features\.py'):
        LoadTeacherFeatures(str(tmp_path / 'nowhere'))(dict(src_teacher_key='x'))


def test_load_frame_is_resize_pair(setup):
    pair = dict(src_img_path=osp.join(setup['root'], 'dog/c.png'),
                trg_img_path=osp.join(setup['root'], 'dog/c.png'))
    pair = ResizePair('padded', 42)(LoadImagePair()(pair))
    got = load_frame(osp.join(setup['root'], 'dog/c.png'), 'padded', 42)
    assert torch.equal(got, torch.from_numpy(pair['src_img'].transpose(2, 0, 1).copy()) / 255)


def test_tool_help_imports_nothing_heavy():
    proc = subprocess.run([sys.executable, '-X', 'importtime', TOOL, '--help'],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith('usage:')
    imported = {line.split('|')[-1].strip().split('.')[0] for line in proc.stderr.splitlines()
                if line.startswith('import time:')}
    assert not imported & {'torch', 'mmengine', 'transformers', 'diffusers', 'common',
                           'correspondence'}


def test_tool_writes_and_resumes(setup, tmp_path, tools_kit, capsys):
    tool = tools_kit.load('precompute_teacher_features')
    out = tmp_path / 'out'
    args = [TINY_CFG, '--out', str(out), '--images', setup['root'], '--shard-size', '2',
            '--cfg-options', f'teacher.pretrained={setup["models"]["reg"]}',
            f'embedder.pretrained={setup["models"]["reg"]}']
    tool.main(args)
    shards = TeacherShards(str(out))
    feats, emb = _direct(setup, 'cat/b.png')
    torch.testing.assert_close(shards.get('cat/b.png'), feats, atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(shards.embedding('cat/b.png'), emb)
    assert shards.manifest['image_root'] == setup['root']
    mtimes = [p.stat().st_mtime_ns for p in _shard_files(out)]
    tool.main(args)  # nothing left to do
    assert [p.stat().st_mtime_ns for p in _shard_files(out)] == mtimes
    assert '0 new shard(s), 5 images' in capsys.readouterr().out
    code = tools_kit.load('_cli').run_cli(tool.PROG, tool.main, args + ['--dtype', 'float32'])
    err = capsys.readouterr().err
    assert code == 1 and "dtype='float16'" in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------ the config
def test_distilldift_precompute_config_builds(tmp_path, setup):
    """The COCO precompute config, its model folders replaced by tiny ones (and SDXL fed 64 px
    instead of 980): SDXL up_blocks.0 (32 ch here) + DINOv2 (32 ch), each L2-normalised."""
    from mmengine.config import Config
    from mmengine.registry import MODELS

    from tests.helpers.tiny_models import save_sd_pipeline
    cfg = Config.fromfile(osp.join(
        REPO_ROOT, 'correspondence', 'configs', 'precompute',
        'sdxl-turbo-t51-201-dinov2-reg-b14_434px_coco-train2017.py'))
    assert cfg.precompute.size == (434, 434) and cfg.precompute.frame == 'stretched'
    assert cfg.teacher.input_sizes == [980, 434]
    sdxl = cfg.teacher.extractors[0]
    assert sdxl.teacher.timesteps == [51, 101, 151, 201] and sdxl.combine == 'mean'
    assert sdxl.prompt_template is None  # unlabeled COCO: no category for the template
    cfg.teacher.input_sizes = [64, 434]
    sdxl.teacher.pretrained = save_sd_pipeline(str(tmp_path / 'sdxl'), xl=True)
    sdxl.teacher.dtype = 'float32'
    assert sdxl.teacher.layers == ['up_blocks.0.attentions.0']
    sdxl.teacher.layers = ['up_blocks.0.resnets.0']  # the tiny XL's up_blocks.0 has no attention
    cfg.teacher.extractors[1].pretrained = setup['models']['reg']
    cfg.embedder.pretrained = setup['models']['reg']
    teacher = MODELS.build(cfg.teacher)
    feats = teacher(torch.rand(1, 3, 434, 434))
    assert feats.shape[:2] == (1, 64)
    norms = feats[0].reshape(2, 32, -1).norm(dim=1)  # each source L2-normalised per cell
    torch.testing.assert_close(norms, torch.ones_like(norms), atol=1e-4, rtol=0)
    assert MODELS.build(cfg.embedder)(torch.rand(2, 3, 434, 434)).shape == (2, 32)
