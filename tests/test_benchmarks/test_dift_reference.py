"""The benchmark's re-implementation of DIFT's protocol against our teacher (tiny SD layout)."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', 'benchmarks'))

from _dift_reference import SD_TINY, dift_features, sd_components  # noqa: E402

from common.teachers.diffusion_teacher import LATENT_SEED_OFFSET, DiffusionTeacher  # noqa: E402


@pytest.fixture(scope='module')
def parts(tmp_path_factory):
    return sd_components(SD_TINY, str(tmp_path_factory.mktemp('tok')))


def image(seed=0):
    return torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_ours_computes_dift_protocol_given_the_same_draws(parts):
    teacher = DiffusionTeacher(parts, layers=['up_blocks.1'], timesteps=[261], ensemble=8,
                               seed=0, latent='sample')
    x = image()
    ours = teacher(x)['up_blocks.1@261']
    shape = (8, 4, 8, 8)
    lat_eps = torch.randn(shape, generator=torch.Generator().manual_seed(LATENT_SEED_OFFSET))
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = dift_features(parts, x, latent_eps=lat_eps, noise=noise)
        other_noise = dift_features(parts, x, latent_eps=lat_eps, noise=noise.roll(1, dims=-1))
    assert ours.shape == ref.shape == (1, 64, 4, 4)
    # float32 rounding amplified by random weights; a different draw is 20x further away.
    assert rel(ours, ref) < 1e-2
    assert rel(other_noise, ref) > 0.2


def test_dift_protocol_encodes_every_copy_and_the_prompt_each_call(parts):
    calls = {'vae': [], 'text': []}
    handles = [parts.vae.encoder.register_forward_hook(
                   lambda m, a, o: calls['vae'].append(a[0].shape[0])),
               parts.text_encoders[0].register_forward_hook(
                   lambda m, a, o: calls['text'].append(1))]
    teacher = DiffusionTeacher(parts, layers=['up_blocks.1'], timesteps=[261], ensemble=8,
                               seed=0, latent='sample')
    try:
        with torch.no_grad():
            for _ in range(2):
                dift_features(parts, image())
            assert calls == {'vae': [8, 8], 'text': [1, 1]}
            calls['vae'].clear()
            calls['text'].clear()
            for _ in range(2):
                teacher(image())
            assert calls == {'vae': [1, 1], 'text': [1]}  # VAE once per image, prompt once
    finally:
        for h in handles:
            h.remove()
