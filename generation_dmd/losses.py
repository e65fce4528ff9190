"""The losses of DMD and DMD2: distribution matching, the fake score's denoising loss, the
regression on teacher pairs (DMD v1), and DMD2's non-saturating GAN losses.

The one rule: every loss computes in float32 and draws its noise levels from a ``torch.Generator``
passed in by the caller (the distiller's, re-seeded from the step counter: a resumed run draws
exactly what the uninterrupted one drew); without one, the global generator is used. Noise
levels come from a Karras grid stored *ascending* (index 0 = ``sigma_min``), the layout of the
DMD2 code: an index range ``[min_step, max_step]`` therefore selects a sigma range directly.

Registered in mmengine's root ``MODELS``: ``DistributionMatchingLoss``, ``FakeScoreLoss``,
``LPIPSRegressionLoss``, ``L2RegressionLoss``. ``lpips`` is imported only when an
``LPIPSRegressionLoss`` is built, so everything else works without the package.
"""
import os
import os.path as osp
import warnings

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS

SIGMA_SAMPLINGS = ('karras_grid', 'lognormal')
LPIPS_NETS = ('vgg', 'alex', 'squeeze')


def karras_sigmas(num=1000, sigma_min=0.002, sigma_max=80.0, rho=7.0):
    """The ``num``-point Karras (EDM) noise grid, float64, ascending: ``[0] = sigma_min``,
    ``[num - 1] = sigma_max``; ``sigma_i = (max^(1/rho) + i/(num-1) (min^(1/rho) -
    max^(1/rho)))^rho`` read backwards. With the defaults ``[1] = 0.0020502`` and ``[998] =
    79.5638`` (the reference re-implementation's generator sigma, "T - 1")."""
    if isinstance(num, bool) or not isinstance(num, int) or num < 2:
        raise ValueError(f'karras_sigmas: num={num!r}; expected an integer >= 2 (the number of '
                         f'grid points; DMD uses 1000).')
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f'karras_sigmas: sigma_min={sigma_min!r}, sigma_max={sigma_max!r}; '
                         f'expected 0 < sigma_min < sigma_max (EDM: 0.002 and 80).')
    ramp = torch.arange(num, dtype=torch.float64) / (num - 1)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)).pow(rho).flip(0)


def _randint(low, high, n, generator, device):
    """``n`` integers in ``[low, high)``; from ``generator`` (on its own device) when given."""
    if generator is None:
        return torch.randint(low, high, (n, ), device=device)
    return torch.randint(low, high, (n, ), generator=generator,
                         device=generator.device).to(device)


def randn_like(x, generator=None):
    """float32 N(0, 1) noise shaped like ``x`` on ``x``'s device, from ``generator`` if given."""
    if generator is None:
        return torch.randn(x.shape, device=x.device, dtype=torch.float32)
    return torch.randn(x.shape, generator=generator, device=generator.device,
                       dtype=torch.float32).to(x.device)


def _check_step_range(owner, min_step_percent, max_step_percent, num_timesteps):
    if not 0 <= min_step_percent <= max_step_percent <= 1:
        raise ValueError(
            f'{owner}: min_step_percent={min_step_percent!r}, max_step_percent='
            f'{max_step_percent!r}; expected 0 <= min_step_percent <= max_step_percent <= 1 '
            f'(fractions of the {num_timesteps}-point noise grid; DMD uses 0.02 and 0.98).')
    return int(min_step_percent * num_timesteps), min(int(max_step_percent * num_timesteps),
                                                      num_timesteps - 1)


@MODELS.register_module()
class DistributionMatchingLoss(torch.nn.Module):
    """DMD's distribution-matching loss: its gradient w.r.t. the generated images ``x`` is the
    difference of the fake and the real score at a random noise level, normalised per image.

    Per image: a grid index ``i ~ U{min_step, ..., max_step}`` (``min_step = int(min_step_percent
    * num_timesteps)``, ``max_step = int(max_step_percent * num_timesteps)``, both included, as
    DMD2's code) picks ``sigma = karras_sigmas(...)[i]``; with the defaults (1000 points, 0.02,
    0.98) that is indices 20..980, ``sigma in [0.003232, 72.05]`` (the reference
    re-implementation's indexing gives ``[0.00316, 71.26]``). Then ``x_t = x + sigma n`` and,
    without gradients,

    * ``pred_real = real_score(x_t, sigma, labels)``; with ``real_guidance_scale = s != 1``,
      ``pred_real = uncond + s (cond - uncond)`` where ``uncond`` is a second call with an all-zero
      one-hot label (EDM's "no label"; ``None`` for an unconditional score). EDM's CIFAR-10 and
      ImageNet teachers were trained without label dropout, so they have no unconditional
      branch and CFG means nothing for them: keep the default 1 (one real-score call);
    * ``pred_fake = fake_score(x_t, sigma, labels)``;
    * ``grad = (pred_fake - pred_real) / (mean_{C,H,W} |x - pred_real| + eps)``, ``nan_to_num``'d
      (the paper's normaliser; FastGen adds eps = 1e-6, DMD/DMD2 use 0);
    * ``loss = loss_weight * 0.5 * mse(x, (x - grad).detach())``, so ``d loss / d x =
      loss_weight * grad / x.numel()``.

    ``forward(x, real_score, fake_score, class_labels=None, generator=None, sigma=None)`` returns
    ``(loss, log)``; ``sigma`` (a number or ``(B,)`` tensor) overrides the draw (tests).
    """

    def __init__(self, min_step_percent=0.02, max_step_percent=0.98, num_timesteps=1000,
                 sigma_min=0.002, sigma_max=80.0, rho=7.0, real_guidance_scale=1.0, eps=0.0,
                 loss_weight=1.0):
        super().__init__()
        self.min_step, self.max_step = _check_step_range(
            type(self).__name__, min_step_percent, max_step_percent, num_timesteps)
        self.register_buffer('sigmas', karras_sigmas(num_timesteps, sigma_min, sigma_max, rho),
                             persistent=False)
        self.real_guidance_scale = float(real_guidance_scale)
        self.eps = float(eps)
        self.loss_weight = float(loss_weight)

    @property
    def sigma_range(self):
        """``(lowest, highest)`` noise level this loss can draw."""
        return float(self.sigmas[self.min_step]), float(self.sigmas[self.max_step])

    def draw_sigma(self, batch, device, generator=None):
        idx = _randint(self.min_step, self.max_step + 1, batch, generator, self.sigmas.device)
        return self.sigmas[idx].to(device=device, dtype=torch.float32)

    def real_prediction(self, real_score, x_t, sigma, class_labels):
        """The (guided) real-score prediction, without gradients."""
        with torch.no_grad():
            cond = real_score(x_t, sigma, class_labels).float()
            if self.real_guidance_scale == 1.0:
                return cond
            uncond_labels = None if class_labels is None else torch.zeros_like(class_labels)
            uncond = real_score(x_t, sigma, uncond_labels).float()
            return uncond + self.real_guidance_scale * (cond - uncond)

    def forward(self, x, real_score, fake_score, class_labels=None, generator=None, sigma=None):
        x = x.float()
        batch = x.shape[0]
        if sigma is None:
            sigma = self.draw_sigma(batch, x.device, generator)
        else:
            sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device) \
                .reshape(-1).expand(batch)
        x_d = x.detach()
        x_t = x_d + sigma.view(-1, 1, 1, 1) * randn_like(x_d, generator)
        pred_real = self.real_prediction(real_score, x_t, sigma, class_labels)
        with torch.no_grad():
            pred_fake = fake_score(x_t, sigma, class_labels).float()
            weight = (x_d - pred_real).abs().mean(dim=(1, 2, 3), keepdim=True) + self.eps
            grad = torch.nan_to_num((pred_fake - pred_real) / weight)
        loss = 0.5 * F.mse_loss(x, (x_d - grad).detach())
        log = dict(dm_grad_norm=grad.flatten(1).norm(dim=1).mean().detach(),
                   dm_sigma=sigma.mean().detach())
        return self.loss_weight * loss, log


@MODELS.register_module()
class FakeScoreLoss(torch.nn.Module):
    """The fake score's denoising loss on detached generated images, with EDM's weighting.

    ``x_t = x + sigma n``; ``loss = loss_weight * mean(lambda(sigma) (D_fake(x_t, sigma) -
    x)^2)`` with ``lambda = (sigma^2 + sd^2) / (sigma sd)^2 = 1/sigma^2 + 1/sd^2`` (``sd =
    sigma_data``). ``sigma_sampling='karras_grid'`` (DMD, DMD2): a uniform index over the full
    ``num_timesteps``-point Karras grid, ``sigma in [sigma_min, sigma_max]``;
    ``'lognormal'`` (EDM's training): ``ln sigma ~ N(P_mean, P_std^2)``.

    ``forward(x, fake_score, class_labels=None, generator=None, sigma=None)`` returns ``(loss,
    log)``. :meth:`noisy` / :meth:`loss_from_prediction` split it for callers that run the fake
    score themselves (the distiller batches it with the GAN's inputs).
    """

    def __init__(self, sigma_data=0.5, sigma_sampling='karras_grid', P_mean=-1.2, P_std=1.2,
                 num_timesteps=1000, sigma_min=0.002, sigma_max=80.0, rho=7.0, loss_weight=1.0):
        super().__init__()
        if sigma_sampling not in SIGMA_SAMPLINGS:
            raise ValueError(
                f'FakeScoreLoss: sigma_sampling={sigma_sampling!r}; expected one of '
                f'{SIGMA_SAMPLINGS} (\'karras_grid\': DMD/DMD2, uniform over the Karras grid; '
                f'\'lognormal\': EDM training).')
        self.sigma_data = float(sigma_data)
        self.sigma_sampling = sigma_sampling
        self.P_mean, self.P_std = float(P_mean), float(P_std)
        self.register_buffer('sigmas', karras_sigmas(num_timesteps, sigma_min, sigma_max, rho),
                             persistent=False)
        self.loss_weight = float(loss_weight)

    @property
    def sigma_range(self):
        """``(lowest, highest)`` noise level of the grid (log-normal draws are unbounded)."""
        if self.sigma_sampling == 'lognormal':
            return 0.0, float('inf')
        return float(self.sigmas[0]), float(self.sigmas[-1])

    def weight(self, sigma):
        """EDM's lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2."""
        sd2 = self.sigma_data ** 2
        return (sigma ** 2 + sd2) / (sigma ** 2 * sd2)

    def draw_sigma(self, batch, device, generator=None):
        if self.sigma_sampling == 'karras_grid':
            idx = _randint(0, len(self.sigmas), batch, generator, self.sigmas.device)
            return self.sigmas[idx].to(device=device, dtype=torch.float32)
        n = randn_like(torch.empty(batch, device=device), generator)
        return (n * self.P_std + self.P_mean).exp()

    def noisy(self, x, generator=None, sigma=None):
        """``(x_t, sigma)`` for the detached float32 images ``x``."""
        x = x.detach().float()
        if sigma is None:
            sigma = self.draw_sigma(x.shape[0], x.device, generator)
        else:
            sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device) \
                .reshape(-1).expand(x.shape[0])
        return x + sigma.view(-1, 1, 1, 1) * randn_like(x, generator), sigma

    def loss_from_prediction(self, pred, x, sigma):
        w = self.weight(sigma.float()).view(-1, 1, 1, 1)
        loss = (w * (pred.float() - x.detach().float()) ** 2).mean()
        return self.loss_weight * loss, dict(fake_sigma=sigma.mean().detach())

    def forward(self, x, fake_score, class_labels=None, generator=None, sigma=None):
        x_t, sigma = self.noisy(x, generator, sigma)
        return self.loss_from_prediction(fake_score(x_t, sigma, class_labels), x, sigma)


# ------------------------------------------------------------------------------ regression (v1)
@MODELS.register_module()
class L2RegressionLoss(torch.nn.Module):
    """``loss_weight * mean((x - target)^2)``: the offline stand-in for LPIPS (no weights)."""

    def __init__(self, loss_weight=0.25):
        super().__init__()
        self.loss_weight = float(loss_weight)

    def forward(self, x, target):
        return self.loss_weight * F.mse_loss(x.float(), target.float())


LPIPS_FETCH = (
    'On a machine with internet access run: pip install lpips==0.1.4 safetensors; python -c '
    '"import lpips; from safetensors.torch import save_model; '
    'save_model(lpips.LPIPS(net=\'{net}\'), \'lpips_{net}.safetensors\')" (this downloads '
    'torchvision\'s {net} weights and lpips\' '
    'linear layers), then copy lpips_{net}.safetensors to {path}.')


@MODELS.register_module()
class LPIPSRegressionLoss(torch.nn.Module):
    """DMD v1's regression loss: ``loss_weight * LPIPS(G(z_ref), y_ref)`` through the ``lpips``
    package, both inputs in [-1, 1] and resized bilinearly to ``resize`` (224, as DMD).

    No weights are ever downloaded: the network is built with ``pnet_rand=True,
    pretrained=False`` and its whole state (backbone + linear layers) is loaded, strictly, from
    ``weights_path``, a ``.safetensors`` file (or a ``torch.save`` state dict, read with
    ``weights_only=True``). Making that file needs a connected machine once (the error for a
    missing file gives the command). The LPIPS network is frozen, in eval mode and held outside
    the module tree: it follows ``.to(device)`` but is never in ``state_dict()`` or
    ``parameters()`` (its weights are an input, not training state).
    """

    def __init__(self, loss_weight=0.25, net='vgg', weights_path=None, resize=224):
        super().__init__()
        if net not in LPIPS_NETS:
            raise ValueError(f'LPIPSRegressionLoss: net={net!r}; expected one of {LPIPS_NETS} '
                             f'(DMD uses \'vgg\').')
        if weights_path is None or not osp.isfile(osp.expanduser(os.fspath(weights_path))):
            where = weights_path or f'data/lpips/lpips_{net}.safetensors'
            what = 'no weights_path was given' if weights_path is None else \
                f'the LPIPS weights file {weights_path!r} does not exist'
            raise FileNotFoundError(
                f'LPIPSRegressionLoss: {what}; expected the full LPIPS-{net} state dict '
                f'(backbone and linear layers) as a .safetensors file, since nothing is '
                f'downloaded at run time. '
                + LPIPS_FETCH.format(net=net, path=where)
                + ' Set weights_path to it, or use L2RegressionLoss offline.')
        try:
            import lpips
        except ImportError as err:
            raise ImportError(
                'LPIPSRegressionLoss needs the lpips package, which is not installed. Install '
                'it with `pip install lpips==0.1.4`, or use L2RegressionLoss.') from err
        self.loss_weight = float(loss_weight)
        self.resize = int(resize)
        self.weights_path = osp.expanduser(os.fspath(weights_path))
        with warnings.catch_warnings():  # torchvision's notes on lpips' legacy `pretrained=`
            warnings.filterwarnings('ignore', category=UserWarning, module='torchvision')
            model = lpips.LPIPS(net=net, pretrained=False, pnet_rand=True, verbose=False)
        state = _with_shared_aliases(model, self._read_state(self.weights_path))
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise RuntimeError(
                f'LPIPSRegressionLoss: {self.weights_path} does not hold the state of '
                f'lpips.LPIPS(net={net!r}) ({str(err).splitlines()[0]}...). Expected the file '
                f'made by: ' + LPIPS_FETCH.format(net=net, path=self.weights_path)) from None
        # held outside the module tree (never in state_dict or parameters), moved by _apply
        self.__dict__['_lpips'] = model.eval().requires_grad_(False)

    @property
    def lpips(self):
        return self.__dict__['_lpips']

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        self.lpips._apply(fn, *args, **kwargs)
        return self

    @staticmethod
    def _read_state(path):
        if path.endswith('.safetensors'):
            from safetensors.torch import load_file
            return load_file(path)
        from common.io.checkpoint import load_checkpoint, state_dict_from_checkpoint
        return state_dict_from_checkpoint(load_checkpoint(path))

    def _prepare(self, x):
        x = x.float()
        if x.shape[-2:] != (self.resize, self.resize):
            x = F.interpolate(x, size=(self.resize, self.resize), mode='bilinear',
                              align_corners=False)
        return x

    def forward(self, x, target):
        dist = self.lpips(self._prepare(x), self._prepare(target.detach()), normalize=False)
        return self.loss_weight * dist.mean()


def _with_shared_aliases(model, state):
    """``state`` completed with the other names of weights ``model`` shares between modules
    (lpips' ``linN`` are also ``lins.N``); safetensors' ``save_model`` stores one name only."""
    names = {}
    for key, value in model.state_dict(keep_vars=True).items():
        names.setdefault((value.data_ptr(), tuple(value.shape)), []).append(key)
    state = dict(state)
    for aliases in names.values():
        present = [k for k in aliases if k in state]
        for key in aliases:
            if present and key not in state:
                state[key] = state[present[0]]
    return state


# ------------------------------------------------------------------------------------------ GAN
def gan_generator_loss(logits_fake):
    """Non-saturating generator loss: ``softplus(-logits_fake).mean()``."""
    return F.softplus(-logits_fake.float()).mean()


def gan_discriminator_loss(logits_fake, logits_real):
    """``softplus(logits_fake).mean() + softplus(-logits_real).mean()``."""
    return F.softplus(logits_fake.float()).mean() + F.softplus(-logits_real.float()).mean()
