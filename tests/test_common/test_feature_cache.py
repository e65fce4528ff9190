"""The teacher's on-disk feature cache: hits, key sensitivity, corruption recovery."""
import glob
import os

import pytest
import torch

from common.teachers import DiffusionTeacher
from common.teachers.feature_cache import FeatureCache, make_key
from tests.helpers.tiny_models import save_ddpm_pipeline

MID = 'mid_block.resnets.1.conv2'


@pytest.fixture(scope='module')
def ddpm_dir(tmp_path_factory):
    return save_ddpm_pipeline(str(tmp_path_factory.mktemp('ddpm') / 'pipe'))


def entries(root):
    return sorted(glob.glob(os.path.join(root, '*', '*.safetensors')))


def test_cached_features_equal_live_and_are_reused(ddpm_dir, tmp_path):
    cache = str(tmp_path / 'cache')
    kw = dict(layers=[MID], timesteps=[10, 20], seed=0, ensemble=2)
    live = DiffusionTeacher(ddpm_dir, **kw)
    cached = DiffusionTeacher(ddpm_dir, cache_dir=cache, **kw)
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    first = cached(x)
    assert len(entries(cache)) == 3 * 2  # images x feature keys
    for key, value in live(x).items():
        torch.testing.assert_close(first[key], value, atol=1e-5, rtol=1e-4)
    cached.cache.hits = 0
    calls = []
    handle = cached.unet.register_forward_hook(lambda *a: calls.append(1))
    again = cached(x)
    handle.remove()
    assert calls == [] and cached.cache.hits == 6
    for key in first:
        torch.testing.assert_close(again[key], first[key])
    # A batch mixing cached and new images computes only the new one.
    cached(torch.cat([x[:1], torch.zeros(1, 3, 16, 16)]))
    assert len(entries(cache)) == 4 * 2


@pytest.mark.parametrize('change', ['seed', 'timestep', 'layer', 'noise', 'weights', 'image',
                                    'ensemble', 'prompt'])
def test_any_change_gives_a_new_key(ddpm_dir, tmp_path, change):
    cache = str(tmp_path / 'cache')
    base = dict(layers=[MID], timesteps=[10], seed=0, cache_dir=cache)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    DiffusionTeacher(ddpm_dir, **base)(x)
    before = set(entries(cache))
    kw = dict(base)
    teacher_dir = ddpm_dir
    if change == 'seed':
        kw['seed'] = 1
    elif change == 'timestep':
        kw['timesteps'] = [11]
    elif change == 'layer':
        kw['layers'] = ['mid_block.resnets.1.conv1']
    elif change == 'noise':
        kw['noise'] = 'none'
    elif change == 'ensemble':
        kw['ensemble'] = 2
    elif change == 'prompt':
        kw['prompt'] = 'other'
    elif change == 'image':
        x = x.clone()
        x[0, 0, 0, 0] += 1e-3
    teacher = DiffusionTeacher(teacher_dir, **kw)
    if change == 'weights':
        with torch.no_grad():
            next(teacher.unet.parameters()).add_(1e-3)
    teacher(x)
    assert len(set(entries(cache)) - before) == 1


def test_corrupt_or_truncated_entry_is_recomputed(ddpm_dir, tmp_path):
    cache = str(tmp_path / 'cache')
    teacher = DiffusionTeacher(ddpm_dir, layers=[MID], timesteps=[10], noise='none',
                               cache_dir=cache)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    good = teacher(x)[f'{MID}@10']
    first, second = entries(cache)
    with open(first, 'r+b') as f:  # truncate
        data = f.read()
        f.seek(0)
        f.truncate()
        f.write(data[:len(data) // 2])
    with open(second, 'r+b') as f:  # flip the last byte of the tensor data
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 0xFF]))
    again = teacher(x)[f'{MID}@10']
    torch.testing.assert_close(again, good)
    assert teacher.cache.misses >= 2
    # Both entries were rewritten and are valid now.
    assert all(FeatureCache(cache).get(os.path.basename(p)[:-12]) is not None
               for p in entries(cache))


def test_make_key_is_stable_and_order_free():
    assert make_key(a=1, b=[1, 2]) == make_key(b=[1, 2], a=1)
    assert make_key(a=1) != make_key(a=2)


def test_features_at_per_image_timesteps_with_and_without_cache(ddpm_dir, tmp_path):
    kw = dict(layers=[MID], timesteps=[10], seed=0, ensemble=2)
    live = DiffusionTeacher(ddpm_dir, **kw)
    cached = DiffusionTeacher(ddpm_dir, cache_dir=str(tmp_path / 'c'), **kw)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    t = torch.tensor([5, 700, 5, 300])  # repeated timesteps must not mix images up
    ref = live.features_at(x, t)[MID]
    for i in range(4):  # each image at its own t equals a single-image call at that t
        single = live.features_at(x[i:i + 1], t[i:i + 1])[MID]
        torch.testing.assert_close(ref[i:i + 1], single, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(cached.features_at(x, t)[MID], ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(cached.features_at(x, t)[MID], ref, atol=1e-5, rtol=1e-4)
    assert cached.cache.hits == 4


def test_changed_noise_schedule_does_not_reuse_entries(tmp_path):
    """Same folder, same weights, but its scheduler config now says cosine: new features."""
    import json
    folder = save_ddpm_pipeline(str(tmp_path / 'pipe'))
    cache = str(tmp_path / 'cache')
    kw = dict(layers=[MID], timesteps=[500], seed=0, cache_dir=cache)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    linear = DiffusionTeacher(folder, **kw)(x)[f'{MID}@500']
    before = set(entries(cache))
    sched_path = os.path.join(folder, 'scheduler', 'scheduler_config.json')
    with open(sched_path) as f:
        config = json.load(f)
    config['beta_schedule'] = 'squaredcos_cap_v2'
    with open(sched_path, 'w') as f:
        json.dump(config, f)
    cosine_teacher = DiffusionTeacher(folder, **kw)
    cosine = cosine_teacher(x)[f'{MID}@500']
    assert len(set(entries(cache)) - before) == 2  # computed anew, not read back
    assert not torch.allclose(cosine, linear)
    live = DiffusionTeacher(folder, layers=[MID], timesteps=[500], seed=0)(x)[f'{MID}@500']
    torch.testing.assert_close(cosine, live, atol=1e-5, rtol=1e-4)


def test_default_class_label_is_part_of_the_key(tmp_path):
    folder = save_ddpm_pipeline(str(tmp_path / 'cond'), class_embeds=5)
    cache = str(tmp_path / 'cache')
    kw = dict(layers=[MID], timesteps=[10], noise='none', cache_dir=cache)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    one = DiffusionTeacher(folder, class_label=1, **kw)(x)[f'{MID}@10']
    before = set(entries(cache))
    three_teacher = DiffusionTeacher(folder, class_label=3, **kw)
    three = three_teacher(x)[f'{MID}@10']
    assert len(set(entries(cache)) - before) == 2 and three_teacher.cache.hits == 0
    assert not torch.allclose(one, three)
    live = DiffusionTeacher(folder, layers=[MID], timesteps=[10], noise='none')
    torch.testing.assert_close(three, live(x, class_labels=[3, 3])[f'{MID}@10'])


def test_network_config_is_part_of_the_key(tmp_path):
    """A config entry that changes outputs without changing weights (norm_eps) gives a new key."""
    import json
    folder = save_ddpm_pipeline(str(tmp_path / 'pipe'))
    cache = str(tmp_path / 'cache')
    kw = dict(layers=[MID], timesteps=[10], noise='none', cache_dir=cache)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    DiffusionTeacher(folder, **kw)(x)
    before = set(entries(cache))
    config_path = os.path.join(folder, 'unet', 'config.json')
    with open(config_path) as f:
        config = json.load(f)
    config['norm_eps'] = 0.5
    with open(config_path, 'w') as f:
        json.dump(config, f)
    DiffusionTeacher(folder, **kw)(x)
    assert len(set(entries(cache)) - before) == 1
