"""DiffusionTeacher against hand-written forwards on tiny pipelines saved with save_pretrained."""
import os

import pytest
import torch

from common.teachers import DiffusionTeacher, TeacherConfigError, TeacherLoadError
from tests.helpers.tiny_models import save_ddpm_pipeline, save_sd_pipeline

MID = 'mid_block.resnets.1.conv2'
EARLY = 'down_blocks.0.resnets.0.conv1'


@pytest.fixture(scope='module')
def ddpm_dir(tmp_path_factory):
    return save_ddpm_pipeline(str(tmp_path_factory.mktemp('ddpm') / 'pipe'))


@pytest.fixture(scope='module')
def sd_dir(tmp_path_factory):
    return save_sd_pipeline(str(tmp_path_factory.mktemp('sd') / 'pipe'))


def images(n=3, size=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def hooked_full_forward(unet, x, t, layer, **kwargs):
    """Reference: a plain full UNet forward with one hand-registered hook."""
    store = {}
    module = dict(unet.named_modules())[layer]
    handle = module.register_forward_hook(lambda m, a, o: store.setdefault('out', o))
    with torch.no_grad():
        unet(x, t, **kwargs)
    handle.remove()
    return store['out'].float()


def q_sample(x0, eps, t, steps=1000):
    """x_t of the DDPM forward process, computed by hand from the linear beta schedule."""
    betas = torch.linspace(1e-4, 0.02, steps, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)[t].float()
    return abar.sqrt() * x0 + (1 - abar).sqrt() * eps


def test_features_match_hand_written_forward_with_seeded_noise(ddpm_dir):
    teacher = DiffusionTeacher(ddpm_dir, layers=[MID, EARLY], timesteps=[10, 700], seed=3)
    x = images()
    out = teacher(x)
    assert sorted(out) == sorted([f'{MID}@10', f'{MID}@700', f'{EARLY}@10', f'{EARLY}@700'])
    eps = torch.randn((1, 3, 16, 16), generator=torch.Generator().manual_seed(3))[0]
    for t in (10, 700):
        x_t = q_sample(x, eps.expand_as(x), t)
        for layer in (MID, EARLY):
            ref = hooked_full_forward(teacher.unet, x_t, torch.full((3, ), t), layer)
            torch.testing.assert_close(out[f'{layer}@{t}'], ref, atol=1e-5, rtol=1e-4)


def test_noise_none_feeds_clean_image(ddpm_dir):
    teacher = DiffusionTeacher(ddpm_dir, layers=[MID], timesteps=[100], noise='none')
    x = images()
    ref = hooked_full_forward(teacher.unet, x, torch.full((3, ), 100), MID)
    torch.testing.assert_close(teacher(x)[f'{MID}@100'], ref, atol=1e-5, rtol=1e-4)


def test_early_exit_skips_the_rest_and_equals_full_forward(ddpm_dir):
    fast = DiffusionTeacher(ddpm_dir, layers=[EARLY], timesteps=[50], noise='none')
    full = DiffusionTeacher(ddpm_dir, layers=[EARLY], timesteps=[50], noise='none',
                            early_exit=False)
    calls = []
    handle = fast.unet.conv_out.register_forward_hook(lambda *a: calls.append(1))
    x = images()
    a = fast(x)[f'{EARLY}@50']
    assert calls == []  # the forward stopped before the output conv
    handle.remove()
    torch.testing.assert_close(a, full(x)[f'{EARLY}@50'])


def test_ensemble_is_mean_over_seeded_members_and_independent_of_batch(ddpm_dir):
    teacher = DiffusionTeacher(ddpm_dir, layers=[MID], timesteps=[300], ensemble=3, seed=7)
    x = images(4)
    out = teacher(x)[f'{MID}@300']
    members = torch.randn((3, 3, 16, 16), generator=torch.Generator().manual_seed(7))
    ref = torch.stack([
        hooked_full_forward(teacher.unet, q_sample(x, m.expand_as(x), 300), torch.full((4, ), 300),
                            MID) for m in members
    ]).mean(0)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    # The same seed gives the same features on every call and whatever the batch holds.
    torch.testing.assert_close(teacher(x[2:])[f'{MID}@300'], out[2:], atol=1e-5, rtol=1e-4)
    other = DiffusionTeacher(ddpm_dir, layers=[MID], timesteps=[300], ensemble=3, seed=8)
    assert not torch.allclose(other(x)[f'{MID}@300'], out)


def test_unseeded_noise_differs_between_calls(ddpm_dir):
    teacher = DiffusionTeacher(ddpm_dir, layers=[MID], timesteps=[500])
    x = images()
    assert not torch.allclose(teacher(x)[f'{MID}@500'], teacher(x)[f'{MID}@500'])


def test_chunked_batches_equal_one_batched_call(ddpm_dir):
    kw = dict(layers=[MID], timesteps=[10, 20, 30], noise='none')
    one = DiffusionTeacher(ddpm_dir, **kw)
    chunked = DiffusionTeacher(ddpm_dir, max_batch_size=2, **kw)
    x = images()
    for key, value in one(x).items():
        torch.testing.assert_close(chunked(x)[key], value, atol=1e-5, rtol=1e-4)


def test_bfloat16_compute_returns_float32_close_to_float32(ddpm_dir):
    f32 = DiffusionTeacher(ddpm_dir, layers=[MID], timesteps=[100], noise='none')
    bf16 = DiffusionTeacher(ddpm_dir, layers=[MID], timesteps=[100], noise='none',
                            dtype='bfloat16')
    assert next(bf16.unet.parameters()).dtype == torch.bfloat16
    x = images()
    a, b = f32(x)[f'{MID}@100'], bf16(x)[f'{MID}@100']
    assert b.dtype == torch.float32
    assert (a - b).abs().mean() / a.abs().mean() < 0.05


def test_teacher_is_frozen_hidden_and_follows_to(ddpm_dir):
    teacher = DiffusionTeacher(ddpm_dir, layers=[MID], timesteps=[1], dtype='bfloat16')
    owner = torch.nn.Sequential(torch.nn.Linear(2, 2))
    owner.teacher = teacher
    assert list(teacher.parameters()) == []
    assert not any(k.startswith('teacher') for k in owner.state_dict())
    owner.train()
    assert not teacher.unet.training
    assert all(not p.requires_grad for p in teacher.unet.parameters())
    owner.to(torch.float64)  # dtype changes of the owner do not change the teacher's own dtype
    assert next(teacher.unet.parameters()).dtype == torch.bfloat16
    owner.to('meta')
    assert next(teacher.unet.parameters()).device.type == 'meta'


def test_input_norm_is_undone(ddpm_dir):
    mean, std = [125.0, 120.0, 110.0], [50.0, 60.0, 70.0]
    plain = DiffusionTeacher(ddpm_dir, layers=[MID], timesteps=[5], noise='none')
    normed = DiffusionTeacher(ddpm_dir, layers=[MID], timesteps=[5], noise='none',
                              input_norm=dict(mean=mean, std=std))
    pixels = torch.rand(2, 3, 16, 16) * 255
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(normed((pixels - m) / s)[f'{MID}@5'],
                               plain(pixels / 127.5 - 1)[f'{MID}@5'], atol=1e-4, rtol=1e-4)


def test_class_conditional_unet_needs_labels(tmp_path):
    folder = save_ddpm_pipeline(str(tmp_path / 'cond'), class_embeds=5)
    teacher = DiffusionTeacher(folder, layers=[MID], timesteps=[5], noise='none')
    with pytest.raises(TeacherConfigError, match='class-conditional'):
        teacher(images())
    a = teacher(images(), class_labels=[0, 1, 2])[f'{MID}@5']
    b = teacher(images(), class_labels=[4, 4, 4])[f'{MID}@5']
    assert not torch.allclose(a, b)


def test_latent_model_encodes_once_with_vae_mean_and_prompt(sd_dir):
    teacher = DiffusionTeacher(sd_dir, layers=['up_blocks.1'], timesteps=[261], seed=0,
                               prompt='a cat')
    assert teacher.native_size == (16, 16)
    x = images(2, 16)
    out = teacher(x)['up_blocks.1@261']
    with torch.no_grad():
        z = teacher.vae.encode(x).latent_dist.mean * teacher.vae.config.scaling_factor
        tok = teacher._parts.tokenizers[0]
        ids = tok('a cat', padding='max_length', max_length=tok.model_max_length,
                  return_tensors='pt').input_ids
        text = teacher._parts.text_encoders[0](ids)[0].expand(2, -1, -1)
    eps = torch.randn((1, ) + z.shape[1:], generator=torch.Generator().manual_seed(0))[0]
    abar = teacher.noise_scheduler.alphas_cumprod[261]
    z_t = abar.sqrt() * z + (1 - abar).sqrt() * eps
    ref = hooked_full_forward(teacher.unet, z_t, torch.full((2, ), 261), 'up_blocks.1',
                              encoder_hidden_states=text)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    other = DiffusionTeacher(sd_dir, layers=['up_blocks.1'], timesteps=[261], seed=0,
                             prompt='a dog')
    assert not torch.allclose(other(x)['up_blocks.1@261'], out)


def test_sdxl_text_conditioning_matches_the_encoders_called_directly(tmp_path):
    """SDXL: encoder_hidden_states = hidden_states[-2] of both encoders concatenated, text_embeds
    = text_encoder_2's pooled projection, time_ids = (h, w, 0, 0, h, w) of the input image."""
    folder = save_sd_pipeline(str(tmp_path / 'xl'), xl=True)
    teacher = DiffusionTeacher(folder, layers=['mid_block'], timesteps=[100], prompt='a cat',
                               seed=0)
    seen = []
    handle = teacher.unet.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs), with_kwargs=True)
    x = images(2, 24)  # not the native 16 px: the time ids must say the input's size
    out = teacher(x)['mid_block@100']
    handle.remove()
    assert out.shape[0] == 2 and torch.isfinite(out).all()
    with torch.no_grad():
        states, pooled = [], None
        for i, encoder in enumerate(teacher._parts.text_encoders):
            tok = teacher._parts.tokenizers[i]
            ids = tok('a cat', padding='max_length', max_length=tok.model_max_length,
                      truncation=True, return_tensors='pt').input_ids
            result = encoder(ids, output_hidden_states=True)
            states.append(result.hidden_states[-2])
            if i == 1:
                pooled = result.text_embeds
    assert type(teacher._parts.text_encoders[1]).__name__ == 'CLIPTextModelWithProjection'
    kwargs = seen[0]
    assert kwargs['encoder_hidden_states'].shape == (2, 8, 32)
    torch.testing.assert_close(kwargs['encoder_hidden_states'],
                               torch.cat(states, dim=-1).expand(2, -1, -1))
    added = kwargs['added_cond_kwargs']
    torch.testing.assert_close(added['text_embeds'], pooled.expand(2, -1))
    torch.testing.assert_close(added['time_ids'],
                               torch.tensor([[24., 24., 0., 0., 24., 24.]]).expand(2, -1))


def test_latent_sample_is_seeded_per_member_and_independent_of_batch(sd_dir):
    from common.teachers.diffusion_teacher import LATENT_SEED_OFFSET
    teacher = DiffusionTeacher(sd_dir, layers=['up_blocks.1'], timesteps=[261], seed=4,
                               ensemble=2, latent='sample', prompt='a cat')
    x = images(3, 16)
    out = teacher(x)['up_blocks.1@261']
    torch.testing.assert_close(teacher(x)['up_blocks.1@261'], out)  # no global-RNG draw
    torch.testing.assert_close(teacher(x[1:])['up_blocks.1@261'], out[1:], atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        dist = teacher.vae.encode(x).latent_dist
        scale = teacher.vae.config.scaling_factor
        tok = teacher._parts.tokenizers[0]
        ids = tok('a cat', padding='max_length', max_length=tok.model_max_length,
                  return_tensors='pt').input_ids
        text = teacher._parts.text_encoders[0](ids)[0].expand(3, -1, -1)
    shape = (2, ) + tuple(dist.mean.shape[1:])
    lat_eps = torch.randn(shape, generator=torch.Generator().manual_seed(4 + LATENT_SEED_OFFSET))
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(4))
    abar = teacher.noise_scheduler.alphas_cumprod[261]
    refs = []
    for e in range(2):
        z = (dist.mean + dist.std * lat_eps[e]) * scale
        z_t = abar.sqrt() * z + (1 - abar).sqrt() * noise[e]
        refs.append(hooked_full_forward(teacher.unet, z_t, torch.full((3, ), 261), 'up_blocks.1',
                                        encoder_hidden_states=text))
    torch.testing.assert_close(out, torch.stack(refs).mean(0), atol=1e-5, rtol=1e-4)
    mean_teacher = DiffusionTeacher(sd_dir, layers=['up_blocks.1'], timesteps=[261], seed=4,
                                    ensemble=2, prompt='a cat')
    assert not torch.allclose(mean_teacher(x)['up_blocks.1@261'], out)


def test_latent_sample_cache_needs_a_seed(sd_dir, tmp_path):
    with pytest.raises(TeacherConfigError, match="latent='sample' and seed=None"):
        DiffusionTeacher(sd_dir, layers=['up_blocks.1'], timesteps=[261], noise='none',
                         latent='sample', cache_dir=str(tmp_path / 'c'))
    DiffusionTeacher(sd_dir, layers=['up_blocks.1'], timesteps=[261], noise='none',
                     latent='sample', seed=0, cache_dir=str(tmp_path / 'c'))


def _cosine_alphas_cumprod(steps=1000):
    """Nichol & Dhariwal's cosine schedule computed by hand (betas clipped at 0.999)."""
    import math
    f = [math.cos((i / steps + 0.008) / 1.008 * math.pi / 2)**2 for i in range(steps + 1)]
    betas = torch.tensor([min(1 - f[i + 1] / f[i], 0.999) for i in range(steps)],
                         dtype=torch.float64)
    return torch.cumprod(1 - betas, 0).float()


def test_pipeline_without_scheduler_config_needs_noise_schedule(tmp_path):
    import shutil
    folder = save_ddpm_pipeline(str(tmp_path / 'pipe'))
    shutil.rmtree(os.path.join(folder, 'scheduler'))
    with pytest.raises(TeacherLoadError, match='scheduler_config.json not found') as err:
        DiffusionTeacher(folder, layers=[MID], timesteps=[1])
    assert 'noise_schedule=dict(' in str(err.value)
    teacher = DiffusionTeacher(folder, layers=[MID], timesteps=[1], noise_schedule=dict(
        beta_schedule='squaredcos_cap_v2', num_train_timesteps=1000))
    torch.testing.assert_close(teacher.noise_scheduler.alphas_cumprod, _cosine_alphas_cumprod(),
                               atol=1e-6, rtol=1e-5)


def test_bare_unet_folder_needs_noise_schedule(tmp_path):
    from tests.helpers.tiny_models import tiny_unet2d
    folder = str(tmp_path / 'unet')
    tiny_unet2d().save_pretrained(folder)
    with pytest.raises(TeacherLoadError, match='bare UNet folder'):
        DiffusionTeacher(folder, layers=[MID], timesteps=[1])
    teacher = DiffusionTeacher(folder, layers=[MID], timesteps=[700], seed=3, noise_schedule=dict(
        beta_schedule='linear', beta_start=1e-4, beta_end=0.02, num_train_timesteps=1000))
    x = images()
    eps = torch.randn((1, 3, 16, 16), generator=torch.Generator().manual_seed(3))[0]
    ref = hooked_full_forward(teacher.unet, q_sample(x, eps.expand_as(x), 700),
                              torch.full((3, ), 700), MID)
    torch.testing.assert_close(teacher(x)[f'{MID}@700'], ref, atol=1e-5, rtol=1e-4)


def test_noise_schedule_is_checked(ddpm_dir):
    with pytest.raises(TeacherConfigError, match='do not describe a noise schedule'):
        DiffusionTeacher(ddpm_dir, layers=[MID], timesteps=[1],
                         noise_schedule=dict(beta_schedule='linear', prediction='eps'))
    with pytest.raises(TeacherConfigError, match='not a schedule diffusers can build'):
        DiffusionTeacher(ddpm_dir, layers=[MID], timesteps=[1],
                         noise_schedule=dict(beta_schedule='cosine'))


def test_unknown_layer_lists_nearest_paths(ddpm_dir):
    with pytest.raises(TeacherConfigError) as err:
        DiffusionTeacher(ddpm_dir, layers=['mid_block.resnet.1.conv2'], timesteps=[1])
    assert 'mid_block.resnets.1.conv2' in str(err.value)


def test_timestep_out_of_range(ddpm_dir):
    with pytest.raises(TeacherConfigError, match='0..999'):
        DiffusionTeacher(ddpm_dir, layers=[MID], timesteps=[1000])


def test_missing_folder_and_offline_hub_give_advice(tmp_path, monkeypatch):
    with pytest.raises(TeacherLoadError, match='no such folder'):
        DiffusionTeacher(str(tmp_path / 'nope'), layers=[MID], timesteps=[1])
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    with pytest.raises(TeacherLoadError, match='offline') as err:
        DiffusionTeacher('someone/not-downloaded-model', layers=[MID], timesteps=[1])
    assert 'pretrained=' in str(err.value)


def test_bad_options_rejected(ddpm_dir):
    with pytest.raises(TeacherConfigError, match='noise'):
        DiffusionTeacher(ddpm_dir, layers=[MID], timesteps=[1], noise='backward')
    with pytest.raises(TeacherConfigError, match='deterministic'):
        DiffusionTeacher(ddpm_dir, layers=[MID], timesteps=[1], cache_dir='/tmp/x')


def test_noise_schedule_overriding_a_different_pipeline_schedule_is_logged(ddpm_dir, tmp_path):
    from mmengine.logging import MMLogger
    logger = MMLogger.get_instance('noise_schedule_override', log_file=str(tmp_path / 'log.txt'))
    teacher = DiffusionTeacher(ddpm_dir, layers=[MID], timesteps=[1], noise_schedule=dict(
        beta_schedule='squaredcos_cap_v2', num_train_timesteps=1000))
    torch.testing.assert_close(teacher.noise_scheduler.alphas_cumprod, _cosine_alphas_cumprod(),
                               atol=1e-6, rtol=1e-5)
    DiffusionTeacher(ddpm_dir, layers=[MID], timesteps=[1], noise_schedule=dict(
        beta_schedule='linear', num_train_timesteps=1000))  # the pipeline's own: no warning
    for handler in logger.handlers:
        handler.flush()
    log = (tmp_path / 'log.txt').read_text()
    assert log.count('WARNING') == 1 and 'differs from the pipeline' in log


# ------------------------------------------------------------------ per-call prompts
def _count_calls(module):
    calls = []
    return calls, module.register_forward_hook(lambda *a: calls.append(1))


def test_per_call_prompts_equal_teachers_configured_with_them(sd_dir):
    """Each image gets its own prompt; rows stay aligned across timesteps and ensemble members,
    and each distinct prompt runs the text encoder once (then it is cached)."""
    kwargs = dict(layers=['up_blocks.1'], timesteps=[100, 261], seed=0, ensemble=2)
    teacher = DiffusionTeacher(sd_dir, prompt='', **kwargs)
    x = images(3, 16)
    prompts = ['a cat', 'a dog', 'a cat']
    calls, handle = _count_calls(teacher._parts.text_encoders[0])
    out = teacher(x, prompts=prompts)
    assert len(calls) == 2
    teacher(x, prompts=['a dog', 'a cat', 'a dog'])
    teacher.features_at(x, [5, 6, 7], prompts=prompts)
    assert len(calls) == 2
    teacher(x)  # the configured prompt is still the default
    assert len(calls) == 3
    handle.remove()
    for p in ('a cat', 'a dog'):
        own = DiffusionTeacher(sd_dir, prompt=p, **kwargs)
        ref = own(x)
        rows = [i for i, q in enumerate(prompts) if q == p]
        for key, feats in out.items():
            torch.testing.assert_close(feats[rows], ref[key][rows], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(
            teacher.features_at(x, [5, 6, 7], prompts=prompts)['up_blocks.1'][rows],
            own.features_at(x, [5, 6, 7])['up_blocks.1'][rows], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(teacher(x, prompts='a dog')['up_blocks.1@100'],
                               DiffusionTeacher(sd_dir, prompt='a dog', **kwargs)(x)
                               ['up_blocks.1@100'], atol=1e-5, rtol=1e-4)
    chunked = DiffusionTeacher(sd_dir, prompt='', max_batch_size=5, **kwargs)
    for key, feats in chunked(x, prompts=prompts).items():  # prompts split with the rows
        torch.testing.assert_close(feats, out[key], atol=1e-5, rtol=1e-4)
    with pytest.raises(TeacherConfigError, match='one string per image'):
        teacher(x, prompts=['a cat'])


def test_per_call_prompts_rejected_without_text_encoder(ddpm_dir):
    teacher = DiffusionTeacher(ddpm_dir, layers=[MID], timesteps=[10], seed=0)
    with pytest.raises(TeacherConfigError, match='not text-conditioned'):
        teacher(images(), prompts=['a', 'b', 'c'])


def test_sdxl_added_conditioning_follows_per_call_prompts(tmp_path):
    folder = save_sd_pipeline(str(tmp_path / 'xl'), xl=True)
    teacher = DiffusionTeacher(folder, layers=['mid_block'], timesteps=[100], seed=0)
    seen = []
    handle = teacher.unet.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs), with_kwargs=True)
    out = teacher(images(2, 16), prompts=['a cat', 'a dog'])['mid_block@100']
    handle.remove()
    kwargs = seen[0]
    for i, p in enumerate(['a cat', 'a dog']):
        states, pooled = teacher._encode_prompt(p)
        torch.testing.assert_close(kwargs['encoder_hidden_states'][i], states[0])
        torch.testing.assert_close(kwargs['added_cond_kwargs']['text_embeds'][i], pooled[0])
        own = DiffusionTeacher(folder, layers=['mid_block'], timesteps=[100], seed=0, prompt=p)
        torch.testing.assert_close(out[i:i + 1], own(images(2, 16)[i:i + 1])['mid_block@100'],
                                   atol=1e-5, rtol=1e-4)
    assert not torch.allclose(kwargs['added_cond_kwargs']['text_embeds'][0],
                              kwargs['added_cond_kwargs']['text_embeds'][1])


def test_cache_keys_cover_per_call_prompts(sd_dir, tmp_path):
    kwargs = dict(layers=['up_blocks.1'], timesteps=[261], seed=0, cache_dir=str(tmp_path / 'c'))
    teacher = DiffusionTeacher(sd_dir, **kwargs)
    x = images(2, 16)
    cat = teacher(x, prompts=['a cat', 'a cat'])['up_blocks.1@261']
    dog = teacher(x, prompts=['a dog', 'a dog'])['up_blocks.1@261']
    assert not torch.allclose(cat, dog)
    default = teacher(x)['up_blocks.1@261']
    assert not torch.allclose(cat, default)
    fresh = DiffusionTeacher(sd_dir, **kwargs)
    hits = fresh.cache.hits
    torch.testing.assert_close(fresh(x, prompts=['a cat', 'a dog'])['up_blocks.1@261'],
                               torch.stack([cat[0], dog[1]]))
    assert fresh.cache.hits == hits + 2
    torch.testing.assert_close(fresh(x)['up_blocks.1@261'], default)
