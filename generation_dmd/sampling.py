"""EDM's deterministic/stochastic Heun sampler (Karras et al. 2022, Algorithm 2) for any denoiser.

A denoiser is any callable ``net(x, sigma, class_labels) -> D(x; sigma)`` returning the denoised
estimate (EDM's convention; ``generation_dmd.adapters.DiffusersDenoiser`` wraps a diffusers DDPM
this way). Written from the paper's algorithm, not from NVlabs/edm.

The one rule: the sampler state is float64 from start to end (``x = latents.double() * t_0``);
the net may compute in any precision, its output is cast back to float64 before each update, and
the returned tensor is float64 too (cast it yourself). With ``num_steps=N`` the net is evaluated
``2N - 1`` times: every step is a Heun step except the last one (to sigma = 0), which is Euler.
"""
import math

import torch

from common.progress import progress


def _check_schedule(num_steps, sigma_min, sigma_max, rho):
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 2:
        raise ValueError(
            f'num_steps={num_steps!r}: the EDM time-step formula divides by num_steps - 1, so it '
            f'needs an integer >= 2 (EDM uses 18 for CIFAR-10, 40 for ImageNet-64). Pass '
            f'num_steps=2 or more.')
    if not (sigma_min > 0 and sigma_max > sigma_min and math.isfinite(sigma_max)):
        raise ValueError(
            f'sigma_min={sigma_min!r}, sigma_max={sigma_max!r}: expected finite noise levels with '
            f'0 < sigma_min < sigma_max (EDM: sigma_min=0.002, sigma_max=80). Fix the range.')
    if not rho > 0:
        raise ValueError(f'rho={rho!r}: the schedule exponent must be positive (EDM: rho=7).')


def edm_timesteps(num_steps=18, sigma_min=0.002, sigma_max=80, rho=7, round_sigma=None,
                  device=None):
    """EDM's noise levels ``t_0 > ... > t_{N-1} > t_N = 0`` as a float64 tensor of N + 1 values.

    ``t_i = (sigma_max^(1/rho) + i / (N - 1) * (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho`` for
    ``i < N``, each passed through ``round_sigma`` (a net's own rounding, e.g. to the nearest
    training timestep) when given; ``t_N = 0`` is appended unrounded.
    """
    _check_schedule(num_steps, sigma_min, sigma_max, rho)
    i = torch.arange(num_steps, dtype=torch.float64, device=device)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    t = (hi + i / (num_steps - 1) * (lo - hi)) ** rho
    if round_sigma is not None:
        t = torch.as_tensor(round_sigma(t), dtype=torch.float64, device=t.device)
    return torch.cat([t, t.new_zeros(1)])


def edm_sampler(net, latents, class_labels=None, num_steps=18, sigma_min=0.002, sigma_max=80,
                rho=7, S_churn=0, S_min=0, S_max=float('inf'), S_noise=1,
                randn_like=torch.randn_like, return_nfe=False, show_progress=False):
    """Sample with EDM's Algorithm 2 from ``latents`` ~ N(0, I) (any shape, batch first).

    Deterministic (Heun ODE solver) with ``S_churn=0``; with ``S_churn > 0`` each step whose
    noise level satisfies ``S_min <= t_i <= S_max`` first raises it to ``t_hat = t_i (1 + gamma)``,
    ``gamma = min(S_churn / N, sqrt(2) - 1)``, by adding fresh noise
    ``sqrt(t_hat^2 - t_i^2) * S_noise * randn_like(x)`` (pass a seeded ``randn_like`` for
    reproducible stochastic sampling).

    When ``net`` has ``sigma_min`` / ``sigma_max`` attributes (a DDPM's trained range), the
    requested range is clipped to them, and ``net.round_sigma`` (if any) rounds every noise
    level the net sees. Returns the float64 samples, or ``(samples, nfe)`` with
    ``return_nfe=True`` (the number of net evaluations, ``2 * num_steps - 1``).
    """
    if not torch.is_tensor(latents) or not latents.is_floating_point() or latents.dim() < 1:
        raise ValueError(
            f'latents must be a floating-point tensor (batch first) of N(0, I) noise, got '
            f'{type(latents).__name__}'
            f'{"" if not torch.is_tensor(latents) else f" of dtype {latents.dtype}"}. Create it '
            f'with torch.randn(batch, channels, height, width).')
    if S_churn < 0 or S_noise < 0:
        raise ValueError(f'S_churn={S_churn!r}, S_noise={S_noise!r}: both must be >= 0 '
                         f'(S_churn=0 is the deterministic sampler).')
    sigma_min = max(sigma_min, float(getattr(net, 'sigma_min', sigma_min)))
    sigma_max = min(sigma_max, float(getattr(net, 'sigma_max', sigma_max)))
    round_sigma = getattr(net, 'round_sigma', None)

    def rounded(sigma):
        if round_sigma is None:
            return sigma
        return torch.as_tensor(round_sigma(sigma), dtype=torch.float64, device=sigma.device)

    t_steps = edm_timesteps(num_steps, sigma_min, sigma_max, rho, round_sigma=round_sigma,
                            device=latents.device)
    nfe = 0

    def denoise(x, sigma):
        nonlocal nfe
        nfe += 1
        return net(x, sigma, class_labels).to(torch.float64)

    gamma_max = min(S_churn / num_steps, math.sqrt(2) - 1)
    x_next = latents.to(torch.float64) * t_steps[0]
    for i in progress(range(num_steps), 'EDM sampler') if show_progress else range(num_steps):
        t_cur, t_next, x_cur = t_steps[i], t_steps[i + 1], x_next
        # Stochastic churn: step up to t_hat >= t_cur by adding noise of the matching variance.
        gamma = gamma_max if S_min <= float(t_cur) <= S_max else 0.0
        t_hat = rounded(t_cur + gamma * t_cur)
        x_hat = x_cur
        if gamma > 0:
            x_hat = x_cur + (t_hat ** 2 - t_cur ** 2).sqrt() * S_noise * randn_like(x_cur)
        # Euler step along dx/dt = (x - D(x; t)) / t ...
        slope = (x_hat - denoise(x_hat, t_hat)) / t_hat
        x_next = x_hat + (t_next - t_hat) * slope
        # ... corrected by the trapezoidal (Heun) rule, except on the final step to t = 0.
        if i < num_steps - 1:
            slope_next = (x_next - denoise(x_next, t_next)) / t_next
            x_next = x_hat + (t_next - t_hat) * 0.5 * (slope + slope_next)
    return (x_next, nfe) if return_nfe else x_next
