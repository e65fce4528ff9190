"""DMD's losses against hand-computed values: the Karras grid, the distribution-matching gradient
(identity d loss / dx = grad / numel, the per-image normaliser, CFG of the real score), the fake
score's EDM weighting, the regression losses and the non-saturating GAN losses.

The scores are stubs (plain functions of x_t, sigma and labels), so every number is known.
"""
import math
import warnings

import numpy as np
import pytest
import torch

from generation_dmd.losses import (DistributionMatchingLoss, FakeScoreLoss, L2RegressionLoss,
                                   LPIPSRegressionLoss, gan_discriminator_loss,
                                   gan_generator_loss, karras_sigmas)


def karras_numpy(num, smin, smax, rho):
    """EDM's formula, descending, in numpy (an independent computation)."""
    i = np.arange(num, dtype=np.float64)
    return (smax ** (1 / rho) + i / (num - 1) * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho


def const(value):
    """A stub score returning ``value`` everywhere, whatever the input."""
    return lambda x_t, sigma, labels: torch.full_like(x_t, float(value))


# --- the Karras grid -----------------------------------------------------------------------------
def test_karras_grid_is_edms_formula_read_backwards():
    grid = karras_sigmas()
    assert grid.dtype == torch.float64 and grid.shape == (1000, )
    np.testing.assert_allclose(grid.numpy(), karras_numpy(1000, 0.002, 80, 7)[::-1], rtol=1e-12)
    assert grid[0] == pytest.approx(0.002) and grid[-1] == pytest.approx(80.0)
    assert bool((grid[1:] > grid[:-1]).all())
    assert float(grid[998]) == pytest.approx(79.5638, abs=1e-4)  # the re-impl.'s generator sigma
    with pytest.raises(ValueError, match=r'num=1; expected an integer >= 2'):
        karras_sigmas(1)


def test_dm_loss_draws_indices_20_to_980_inclusive():
    loss = DistributionMatchingLoss()
    grid = karras_sigmas()
    assert (loss.min_step, loss.max_step) == (20, 980)
    assert loss.sigma_range == pytest.approx((float(grid[20]), float(grid[980])))
    assert loss.sigma_range == pytest.approx((0.0032316, 72.0539), rel=1e-4)
    sigma = loss.draw_sigma(20000, 'cpu', torch.Generator().manual_seed(0))
    assert sigma.dtype == torch.float32
    assert float(sigma.min()) == pytest.approx(float(grid[20]), rel=1e-6)
    assert float(sigma.max()) == pytest.approx(float(grid[980]), rel=1e-6)
    with pytest.raises(ValueError, match=r'min_step_percent=0.9, max_step_percent=0.1; expected'):
        DistributionMatchingLoss(min_step_percent=0.9, max_step_percent=0.1)


# --- distribution matching ---------------------------------------------------------------------
def test_dm_gradient_is_the_normalised_score_difference_over_numel():
    gen_seed, sigma = 3, 1.7
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    real = lambda x_t, s, y: 0.5 * x_t - 0.1  # noqa: E731
    fake = lambda x_t, s, y: 0.3 * x_t + 0.2  # noqa: E731
    loss, log = DistributionMatchingLoss()(x, real, fake, None,
                                           generator=torch.Generator().manual_seed(gen_seed),
                                           sigma=sigma)
    loss.backward()
    # the same noise, drawn independently
    n = torch.randn(x.shape, generator=torch.Generator().manual_seed(gen_seed))
    x0 = x.detach()
    x_t = x0 + sigma * n
    pred_real, pred_fake = real(x_t, sigma, None), fake(x_t, sigma, None)
    weight = (x0 - pred_real).abs().mean(dim=(1, 2, 3), keepdim=True)
    grad = (pred_fake - pred_real) / weight
    torch.testing.assert_close(x.grad, grad / x.numel(), rtol=1e-5, atol=1e-8)
    assert float(loss.detach()) == pytest.approx(0.5 * float((grad ** 2).mean()), rel=1e-5)
    assert float(log['dm_sigma']) == pytest.approx(sigma)


def test_dm_normaliser_by_hand():
    x = torch.cat([torch.full((1, 1, 2, 2), 2.0), torch.full((1, 1, 2, 2), -0.5)]) \
        .requires_grad_(True)
    # real = 0, fake = 1: grad = 1 / mean|x - 0| = 1/2 for image 0 and 1/0.5 = 2 for image 1
    loss, _ = DistributionMatchingLoss()(x, const(0), const(1), sigma=1.0)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(0.5 * (0.25 + 4) / 2)  # 0.5 * mean(grad^2)
    expected = torch.tensor([0.5, 2.0]).view(2, 1, 1, 1).expand(2, 1, 2, 2) / 8
    torch.testing.assert_close(x.grad, expected)
    # eps is added to the normaliser: 1 / (2 + 1) and 1 / (0.5 + 1); loss_weight scales it all
    x.grad = None
    loss, _ = DistributionMatchingLoss(eps=1.0, loss_weight=4.0)(x, const(0), const(1), sigma=1.0)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(4.0 * 0.5 * ((1 / 3) ** 2 + (1 / 1.5) ** 2) / 2)
    torch.testing.assert_close(x.grad[:, 0, 0, 0], 4.0 * torch.tensor([1 / 3, 1 / 1.5]) / 8)


def test_dm_zero_over_zero_is_zero_not_nan():
    x = torch.zeros(1, 1, 2, 2, requires_grad=True)
    loss, _ = DistributionMatchingLoss()(x, const(0), const(0), sigma=1.0)
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.equal(x.grad, torch.zeros_like(x))


def test_real_guidance_scale_mixes_conditional_and_unconditional_calls():
    calls = []

    def real(x_t, sigma, labels):
        calls.append(labels.clone())
        unconditional = not bool(labels.any())
        return torch.full_like(x_t, -1.0 if unconditional else 1.0)

    labels = torch.nn.functional.one_hot(torch.tensor([3]), 10).float()
    x = torch.full((1, 1, 2, 2), 7.0, requires_grad=True)
    loss, _ = DistributionMatchingLoss(real_guidance_scale=3.0)(x, real, const(0), labels,
                                                                sigma=1.0)
    loss.backward()
    # pred_real = -1 + 3 (1 - -1) = 5; normaliser |7 - 5| = 2; grad = (0 - 5) / 2 = -2.5
    torch.testing.assert_close(x.grad, torch.full_like(x, -2.5 / 4))
    assert len(calls) == 2 and torch.equal(calls[0], labels)
    assert torch.equal(calls[1], torch.zeros_like(labels))  # EDM's "no label"
    calls.clear()
    DistributionMatchingLoss()(x, real, const(0), labels, sigma=1.0)
    assert len(calls) == 1  # the default (1): no unconditional call


# --- fake score ----------------------------------------------------------------------------------
def test_edm_weighting_is_inverse_sigma_squared_plus_inverse_sigma_data_squared():
    loss = FakeScoreLoss(sigma_data=0.5)
    sigma = torch.tensor([0.002, 0.1, 0.5, 1.0, 80.0], dtype=torch.float64)
    torch.testing.assert_close(loss.weight(sigma), 1 / sigma ** 2 + 1 / 0.5 ** 2)


def test_fake_score_loss_by_hand():
    x = torch.cat([torch.full((1, 1, 2, 2), 1.0), torch.full((1, 1, 2, 2), 2.0)])
    seen = {}

    def zero_score(x_t, sigma, labels):
        seen['sigma'] = sigma
        return torch.zeros_like(x_t)

    loss, _ = FakeScoreLoss(sigma_data=0.5, loss_weight=2.0)(
        x, zero_score, sigma=torch.tensor([0.5, 2.0]))
    # lambda(0.5) = 4 + 4 = 8, lambda(2) = 0.25 + 4 = 4.25; mean of lambda * (0 - x)^2
    assert float(loss.detach()) == pytest.approx(2.0 * (8 * 1 + 4.25 * 4) / 2)
    torch.testing.assert_close(seen['sigma'], torch.tensor([0.5, 2.0]))


def test_fake_score_sigma_samplings():
    gen = torch.Generator().manual_seed(0)
    grid = FakeScoreLoss().draw_sigma(20000, 'cpu', gen)
    assert float(grid.min()) == pytest.approx(0.002, rel=1e-5)
    assert float(grid.max()) == pytest.approx(80.0, rel=1e-6)
    log_sigma = FakeScoreLoss(sigma_sampling='lognormal').draw_sigma(20000, 'cpu', gen).log()
    assert float(log_sigma.mean()) == pytest.approx(-1.2, abs=0.04)
    assert float(log_sigma.std()) == pytest.approx(1.2, abs=0.04)
    with pytest.raises(ValueError, match=r"sigma_sampling='karas_grid'; expected one of"):
        FakeScoreLoss(sigma_sampling='karas_grid')


# --- regression (DMD v1) -------------------------------------------------------------------------
def test_l2_regression_by_hand():
    x, y = torch.zeros(2, 1, 2, 2), torch.full((2, 1, 2, 2), 2.0)
    assert float(L2RegressionLoss(loss_weight=0.25)(x, y)) == pytest.approx(0.25 * 4)


def test_lpips_without_weights_says_what_to_fetch(tmp_path):
    missing = str(tmp_path / 'lpips_vgg.safetensors')
    with pytest.raises(FileNotFoundError, match=r'(?s)does not exist.*pip install lpips==0\.1\.4'
                       r'.*lpips_vgg\.safetensors.*use L2RegressionLoss offline'):
        LPIPSRegressionLoss(weights_path=missing)
    with pytest.raises(ValueError, match=r"net='resnet'; expected one of"):
        LPIPSRegressionLoss(net='resnet', weights_path=missing)


def test_lpips_regression_with_local_weights(tmp_path):
    lpips = pytest.importorskip('lpips')
    from safetensors.torch import save_file, save_model
    torch.manual_seed(0)
    with warnings.catch_warnings():  # torchvision's deprecation notes on lpips' calls
        warnings.simplefilter('ignore', UserWarning)
        reference = lpips.LPIPS(net='alex', pretrained=False, pnet_rand=True, verbose=False)
    with torch.no_grad():
        for p in reference.parameters():
            p.copy_(torch.rand_like(p) * 0.1)  # linear layers must be >= 0 as lpips' are
    path = str(tmp_path / 'lpips_alex.safetensors')
    save_model(reference, path)  # as the recipe in the missing-file error: shared names once
    loss = LPIPSRegressionLoss(loss_weight=0.25, net='alex', weights_path=path, resize=64)
    assert loss.state_dict() == {} and list(loss.parameters()) == []  # held outside
    gen = torch.Generator().manual_seed(1)
    x = (torch.rand(2, 3, 8, 8, generator=gen) * 2 - 1).requires_grad_(True)
    y = torch.rand(2, 3, 8, 8, generator=gen) * 2 - 1
    value = loss(x, y)
    up = lambda t: torch.nn.functional.interpolate(t, size=(64, 64), mode='bilinear',  # noqa
                                                   align_corners=False)
    expected = 0.25 * reference(up(x.detach()), up(y)).mean()
    assert float(value.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    assert float(value.detach()) > 0
    value.backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    # a file holding another network's state is refused with the recipe
    save_file({'something': torch.zeros(1)}, str(tmp_path / 'other.safetensors'))
    with pytest.raises(RuntimeError, match=r'does not hold the state of lpips\.LPIPS'):
        LPIPSRegressionLoss(net='alex', weights_path=str(tmp_path / 'other.safetensors'))


# --- GAN -----------------------------------------------------------------------------------------
def test_non_saturating_gan_losses_by_hand():
    logits = torch.tensor([0.0, math.log(3.0)])
    # softplus(-0) = ln 2, softplus(-ln 3) = ln(1 + 1/3)
    assert float(gan_generator_loss(logits)) == pytest.approx(
        (math.log(2) + math.log(4 / 3)) / 2)
    fake, real = torch.tensor([math.log(3.0)]), torch.tensor([-math.log(3.0), 0.0])
    # softplus(ln 3) = ln 4; softplus(ln 3) = ln 4 and softplus(0) = ln 2 for the real side
    assert float(gan_discriminator_loss(fake, real)) == pytest.approx(
        math.log(4) + (math.log(4) + math.log(2)) / 2)
