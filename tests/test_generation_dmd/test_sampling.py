"""EDM's Heun sampler against closed forms (time steps, a linear Gaussian denoiser worked by hand)
and the diffusers-DDPM adapter against direct UNet calls on a tiny random DDPM."""
import math
import os.path as osp

import numpy as np
import pytest
import torch

from generation_dmd.adapters import DiffusersDenoiser
from generation_dmd.sampling import edm_sampler, edm_timesteps
from tests.helpers.tiny_models import save_ddpm_pipeline

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO_TEACHER = osp.join(REPO_ROOT, 'work_dirs', 'demo', 'teacher', 'pipeline')


class GaussianDenoiser:
    """The exact denoiser for data ~ N(0, s^2): D(x; sigma) = x s^2 / (s^2 + sigma^2); it counts
    its calls and records the noise levels it is asked about."""

    def __init__(self, s):
        self.s, self.calls, self.sigmas = s, 0, []

    def __call__(self, x, sigma, class_labels=None):
        self.calls += 1
        self.sigmas.append(float(sigma))
        return x * self.s ** 2 / (self.s ** 2 + sigma ** 2)


# ---------------------------------------------------------------- time steps

def test_timesteps_follow_the_closed_form():
    t = edm_timesteps(18)
    assert t.dtype == torch.float64 and t.shape == (19,)
    assert float(t[0]) == pytest.approx(80.0, rel=1e-12)
    assert float(t[17]) == pytest.approx(0.002, rel=1e-9)
    assert float(t[18]) == 0.0
    # every step, written out independently with numpy
    i = np.arange(18)
    expected = (80 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    np.testing.assert_allclose(t[:18].numpy(), expected, rtol=1e-12)
    assert bool((t[1:] < t[:-1]).all())
    # N = 3, rho = 1: a straight line from sigma_max to sigma_min, then 0
    assert edm_timesteps(3, 1.0, 3.0, rho=1).tolist() == pytest.approx([3.0, 2.0, 1.0, 0.0])
    # round_sigma is applied to t_0..t_{N-1}, never to the appended 0
    rounded = edm_timesteps(3, 1.0, 3.0, rho=1, round_sigma=lambda s: s + 0.5)
    assert rounded.tolist() == pytest.approx([3.5, 2.5, 1.5, 0.0])


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_steps=1), r'num_steps=1: .* integer >= 2'),
    (dict(num_steps=2.0), r'num_steps=2.0: .* integer >= 2'),
    (dict(sigma_min=80, sigma_max=0.002), r'0 < sigma_min < sigma_max'),
    (dict(sigma_min=0), r'0 < sigma_min < sigma_max'),
    (dict(rho=0), r'rho=0: .* positive'),
])
def test_timesteps_reject_bad_schedules(kwargs, match):
    with pytest.raises(ValueError, match=match):
        edm_timesteps(**kwargs)


# ---------------------------------------------------------------- sampler, Gaussian toy

def test_two_step_sampler_matches_the_hand_worked_heun_update():
    # N = 2: t = (80, 0.002, 0). With D = a(sigma) x, a = s^2/(s^2+sigma^2), the slope is
    # x (1 - a) / sigma; one Heun step 80 -> 0.002 then one Euler step to 0, which lands on D.
    s, t0, t1 = 0.5, 80.0, 0.002
    a = lambda sig: s ** 2 / (s ** 2 + sig ** 2)  # noqa: E731
    z = torch.tensor([1.0, -2.0, 0.25])
    x0 = z.double() * t0
    d0 = x0 * (1 - a(t0)) / t0
    euler = x0 + (t1 - t0) * d0
    d1 = euler * (1 - a(t1)) / t1
    x1 = x0 + (t1 - t0) * (d0 + d1) / 2
    expected = a(t1) * x1
    net = GaussianDenoiser(s)
    out, nfe = edm_sampler(net, z, num_steps=2, return_nfe=True)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=0)
    assert nfe == net.calls == 3
    assert net.sigmas == pytest.approx([80.0, 0.002, 0.002])


def test_deterministic_sampler_reproduces_the_data_variance_in_35_evaluations():
    s = 0.5
    exact = 80 * s / math.sqrt(s ** 2 + 80 ** 2)
    # the probability-flow ODE dx/dsigma = x sigma / (s^2 + sigma^2) maps x(80) = 80 z to
    # x(0) = 80 z s / sqrt(s^2 + 80^2) = exact * z; a linear net makes the sampler linear too
    net = GaussianDenoiser(s)
    latents = torch.randn(20000, generator=torch.Generator().manual_seed(0))
    out, nfe = edm_sampler(net, latents, return_nfe=True)
    assert nfe == net.calls == 35  # 17 Heun steps (2 calls) + the final Euler step (1 call)
    ratio = out / latents.double()
    assert float(ratio.std()) < 1e-9
    # Heun is second order: doubling the steps divides the error by ~4 (Euler: by ~2), and
    # with 18 steps this toy's map is 5.5 % high (error 0.0276)
    errors = [float(edm_sampler(GaussianDenoiser(s), torch.ones(1), num_steps=n)[0]) - exact
              for n in (18, 36, 72)]
    assert errors[0] == pytest.approx(float(ratio.mean()) - exact, rel=1e-9)
    assert 0.02 < errors[0] < 0.035
    assert 3.5 < errors[0] / errors[1] < 4.6 and 3.5 < errors[1] / errors[2] < 4.6
    # with a fine grid the samples carry the data variance (20000 samples: std error ~1 %)
    fine = edm_sampler(GaussianDenoiser(s), latents, num_steps=256)
    assert float(fine.var()) == pytest.approx(s ** 2, rel=0.03)
    assert float(out.var()) == pytest.approx(
        float(latents.double().var()) * float(ratio.mean()) ** 2)


def _seeded(seed):
    gen = torch.Generator().manual_seed(seed)
    return lambda x: torch.randn(x.shape, generator=gen, dtype=x.dtype)


def test_stochastic_sampler_differs_is_seeded_and_keeps_the_variance():
    s = 0.5
    latents = torch.randn(20000, generator=torch.Generator().manual_seed(1))
    churn = dict(S_churn=40, S_min=0.05, S_max=50, S_noise=1.003)
    deterministic = edm_sampler(GaussianDenoiser(s), latents)
    net = GaussianDenoiser(s)
    a = edm_sampler(net, latents, randn_like=_seeded(7), **churn)
    b = edm_sampler(GaussianDenoiser(s), latents, randn_like=_seeded(7), **churn)
    c = edm_sampler(GaussianDenoiser(s), latents, randn_like=_seeded(8), **churn)
    assert net.calls == 35
    assert torch.equal(a, b)
    assert not torch.allclose(a, c) and not torch.allclose(a, deterministic)
    # churn adds discretisation error at 18 steps (variance 0.318 here); with 256 steps the
    # stochastic sampler lands on the data variance too
    fine = edm_sampler(GaussianDenoiser(s), latents, num_steps=256, randn_like=_seeded(7), **churn)
    assert float(a.var()) > float(deterministic.var()) > s ** 2
    assert float(fine.var()) == pytest.approx(s ** 2, rel=0.04)
    # churn raises t_i in [S_min, S_max] to t_i (1 + gamma), gamma = min(40/18, sqrt 2 - 1)
    t = edm_timesteps(18)
    gamma = math.sqrt(2) - 1
    first = [float(ti) * (1 + gamma) if 0.05 <= ti <= 50 else float(ti) for ti in t[:18]]
    assert net.sigmas[0::2][:17] == pytest.approx(first[:17])
    assert float(t[0]) > 50 and net.sigmas[0] == pytest.approx(80.0)  # above S_max: no churn


def test_sampler_rejects_bad_latents():
    with pytest.raises(ValueError, match=r'latents must be a floating-point tensor .* torch.randn'):
        edm_sampler(GaussianDenoiser(1.0), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r'S_churn=-1, S_noise=1: both must be >= 0'):
        edm_sampler(GaussianDenoiser(1.0), torch.zeros(4), S_churn=-1)


# ---------------------------------------------------------------- adapter on a tiny DDPM

@pytest.fixture(scope='module')
def ddpm_folder(tmp_path_factory):
    return save_ddpm_pipeline(str(tmp_path_factory.mktemp('ddpm') / 'pipe'), sample_size=8)


@pytest.fixture(scope='module')
def cond_folder(tmp_path_factory):
    return save_ddpm_pipeline(str(tmp_path_factory.mktemp('cddpm') / 'pipe'), sample_size=8,
                              class_embeds=3)


def _abar(folder):
    from diffusers import DDPMScheduler
    return DDPMScheduler.from_pretrained(folder, subfolder='scheduler').alphas_cumprod.double()


def test_adapter_range_and_state_dict(ddpm_folder):
    from mmengine.registry import MODELS
    net = MODELS.build(dict(type='DiffusersDenoiser', pretrained=ddpm_folder))
    # linear betas 1e-4 .. 0.02 over 1000 steps: sigma_0 = sqrt(beta_0 / (1 - beta_0)); the
    # table is the scheduler's own float32 alphas_cumprod (what the DDPM was trained with), so
    # 1 - abar_0 = 1e-4 carries a float32 rounding of ~1e-4 relative
    assert net.sigma_min == pytest.approx(math.sqrt(1e-4 / (1 - 1e-4)), rel=2e-4)
    betas = np.linspace(1e-4, 0.02, 1000)
    abar_last = np.prod(1 - betas)
    assert net.sigma_max == pytest.approx(math.sqrt((1 - abar_last) / abar_last), rel=1e-4)
    assert net.prediction_type == 'epsilon'
    keys = list(net.state_dict())
    assert keys and all(k.startswith('unet.') for k in keys)


@pytest.mark.parametrize('timestep', ['interpolate', 'nearest'])
def test_adapter_is_x_minus_sigma_eps_on_a_training_timestep(ddpm_folder, timestep):
    net = DiffusersDenoiser(ddpm_folder, timestep=timestep)
    abar = _abar(ddpm_folder)
    t = 500
    sigma = float(((1 - abar[t]) / abar[t]).sqrt())
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * sigma
    with torch.no_grad():
        eps = net.unet((x / math.sqrt(1 + sigma ** 2)).float(), torch.tensor(t)).sample
        got = net(x, sigma)
        got_batched = net(x, torch.full((2, 1, 1, 1), sigma))
    torch.testing.assert_close(got, x - sigma * eps, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_batched, got)
    assert float(net.sigma_to_timestep(torch.tensor(sigma, dtype=torch.float64))) == t


def test_adapter_interpolates_between_training_timesteps(ddpm_folder):
    net = DiffusersDenoiser(ddpm_folder)
    nearest = DiffusersDenoiser(ddpm_folder, timestep='nearest')
    sig = ((1 - _abar(ddpm_folder)) / _abar(ddpm_folder)).sqrt()
    between = (sig[300] * sig[301]).sqrt()  # log-midpoint of timesteps 300 and 301
    assert float(net.sigma_to_timestep(between)) == pytest.approx(300.5, abs=1e-9)
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        eps = net.unet((x / (1 + between ** 2).sqrt()).float(), torch.tensor([300.5])).sample
        torch.testing.assert_close(net(x, between), (x - between * eps).float(),
                                   rtol=1e-5, atol=1e-5)
    # 'nearest' rounds to a trained level: round_sigma snaps to sigma_300 or sigma_301
    slightly_low = sig[300] * 1.001
    assert float(nearest.round_sigma(slightly_low)) == pytest.approx(float(sig[300]), rel=1e-12)
    assert float(net.round_sigma(slightly_low)) == float(slightly_low)


@pytest.mark.parametrize('prediction_type', ['v_prediction', 'sample'])
def test_adapter_other_prediction_types(ddpm_folder, prediction_type):
    net = DiffusersDenoiser(ddpm_folder, prediction_type=prediction_type)
    abar = _abar(ddpm_folder)
    t = 200
    sigma = float(((1 - abar[t]) / abar[t]).sqrt())
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2)).double()
    x_t = abar[t].sqrt() * x  # the DDPM's input: sqrt(abar) (x0 + sigma n) = sqrt(abar) x0 + ...
    with torch.no_grad():
        out = net.unet(x_t.float(), torch.tensor(t)).sample.double()
        got = net(x, sigma)
    expected = abar[t].sqrt() * x_t - (1 - abar[t]).sqrt() * out if \
        prediction_type == 'v_prediction' else out
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_adapter_passes_class_labels(cond_folder):
    net = DiffusersDenoiser(cond_folder)
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([0, 2, 1])
    with torch.no_grad():
        by_int = net(x, 1.0, labels)
        by_onehot = net(x, 1.0, torch.nn.functional.one_hot(labels, 3).float())
        other = net(x, 1.0, torch.tensor([1, 0, 2]))
        direct = net.unet((x / math.sqrt(2)), net.sigma_to_timestep(torch.tensor(1.0)).float()
                          .expand(3), class_labels=labels).sample
    torch.testing.assert_close(by_int, by_onehot)
    torch.testing.assert_close(by_int, x - direct, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(by_int, other)
    with pytest.raises(ValueError, match=r'class-conditional \(3 classes\) but class_labels is '
                                         r'None; pass integer labels \(3,\)'):
        net(x, 1.0)
    with pytest.raises(ValueError, match=r'one-hot class_labels have 4 columns; the UNet has 3'):
        net(x, 1.0, torch.zeros(3, 4))


def test_sampler_runs_the_adapter_inside_its_trained_range(ddpm_folder):
    net = DiffusersDenoiser(ddpm_folder)
    seen = []

    def counting(x, sigma, class_labels=None):
        seen.append(float(sigma))
        return net(x, sigma, class_labels)

    counting.sigma_min, counting.sigma_max = net.sigma_min, net.sigma_max
    latents = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        out, nfe = edm_sampler(counting, latents, num_steps=3, return_nfe=True)
    assert nfe == len(seen) == 5 and out.shape == (2, 3, 8, 8) and bool(out.isfinite().all())
    # sigma_min 0.002 is clipped up to the DDPM's sigma_0 ~ 0.01; sigma_max 80 < sigma_999 stays
    assert seen[0] == pytest.approx(80.0) and seen[-1] == pytest.approx(net.sigma_min)


def test_adapter_rejects_bad_inputs(ddpm_folder):
    net = DiffusersDenoiser(ddpm_folder)
    x = torch.zeros(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"prediction_type='flow' is not supported; expected "
                                         r"one of \('epsilon', 'v_prediction', 'sample'\)"):
        DiffusersDenoiser(ddpm_folder, prediction_type='flow')
    with pytest.raises(ValueError, match=r"timestep='round': expected one of"):
        DiffusersDenoiser(ddpm_folder, timestep='round')
    with pytest.raises(ValueError, match=r'needs exactly one source'):
        DiffusersDenoiser()
    with pytest.raises(ValueError, match=r'has no alphas_cumprod'):
        DiffusersDenoiser(unet=net.unet)
    with pytest.raises(ValueError, match=r'x has shape \(2, 1, 8, 8\); expected \(batch, 3, '):
        net(torch.zeros(2, 1, 8, 8), 1.0)
    with pytest.raises(ValueError, match=r'x has shape \(3, 8, 8\)'):
        net(torch.zeros(3, 8, 8), 1.0)
    with pytest.raises(ValueError, match=r'sigma has shape \(3,\) for a batch of 2'):
        net(x, torch.ones(3))
    with pytest.raises(ValueError, match=r'sigma in \[80, 500\] leaves the range the DDPM was '
                                         r'trained on, \[0.0100013, 157.407\] \(its sigma_min/sigma_max\); clip'):
        net(x, torch.tensor([80.0, 500.0]))
    with pytest.raises(ValueError, match=r'class_labels were given but the UNet is unconditional'):
        net(x, 1.0, torch.tensor([0, 1]))


def test_adapter_from_components_matches_the_folder(ddpm_folder):
    from diffusers import DDPMScheduler, UNet2DModel
    unet = UNet2DModel.from_pretrained(osp.join(ddpm_folder, 'unet'))
    scheduler = DDPMScheduler.from_pretrained(ddpm_folder, subfolder='scheduler')
    a = DiffusersDenoiser(unet=unet, scheduler=scheduler)
    b = DiffusersDenoiser(ddpm_folder)
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(a(x, 2.0), b(x, 2.0))


@pytest.mark.skipif(not osp.isdir(DEMO_TEACHER), reason='digits demo teacher not trained here')
def test_adapter_runs_the_digits_demo_teacher():
    net = DiffusersDenoiser(DEMO_TEACHER)
    size = net.unet.config.sample_size
    latents = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        out, nfe = edm_sampler(net, latents, num_steps=2, return_nfe=True)
    assert nfe == 3 and out.shape == latents.shape and bool(out.isfinite().all())
