"""EDM preconditioners: a raw network F as a denoiser D(x; s) = c_skip x + c_out F(c_in x; c_noise).

The one rule: the raw network is the sub-module ``model`` (so every weight key starts with
``model.``, exactly as in NVlabs/edm's released networks) and it is built only from the closed
table ``NETWORKS`` by class name; a preconditioner records its constructor arguments in
``init_kwargs`` (JSON-serialisable), which is all ``loading.save_edm``/``load_edm`` need to
rebuild it. Inputs and outputs of ``forward`` are float32; with ``use_fp16=True`` the raw network
runs in float16 on CUDA only (as EDM), and ``force_fp32=True`` turns that off for one call.

Coefficients (EDM paper, Table 1), sigma_d = ``sigma_data``:

* EDMPrecond: c_skip = sd^2/(s^2+sd^2), c_out = s sd/sqrt(s^2+sd^2), c_in = 1/sqrt(s^2+sd^2),
  c_noise = ln(s)/4.
* VPPrecond:  c_skip = 1, c_out = -s, c_in = 1/sqrt(s^2+1), c_noise = (M-1) sigma^-1(s), with
  sigma(t) = sqrt(exp(beta_d t^2/2 + beta_min t) - 1).
* VEPrecond:  c_skip = 1, c_out = s, c_in = 1, c_noise = ln(s/2).
"""
import inspect

import torch
from mmengine.registry import MODELS

from .dhariwal_unet import DhariwalUNet
from .song_unet import SongUNet

NETWORKS = {'SongUNet': SongUNet, 'DhariwalUNet': DhariwalUNet}


def build_network(model_type, precond, **kwargs):
    """Build ``NETWORKS[model_type](**kwargs)`` with one-paragraph errors for bad names."""
    if model_type not in NETWORKS:
        raise ValueError(
            f'{precond} was given model_type={model_type!r}, which is not a known EDM network: '
            f'expected one of {", ".join(sorted(NETWORKS))}. Fix model_type in the configuration '
            '(networks are looked up by name in generation_dmd.networks.precond.NETWORKS).')
    cls = NETWORKS[model_type]
    accepted = [name for name in inspect.signature(cls).parameters]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f'{precond} passes {", ".join(unknown)} to {model_type}, which does not accept '
            f'{"it" if len(unknown) == 1 else "them"}: {model_type} accepts '
            f'{", ".join(accepted)}. Remove or rename the option in the configuration.')
    return cls(**kwargs)


def _jsonable(value):
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


class _Precond(torch.nn.Module):
    """Shared machinery; subclasses define ``coefficients(sigma)``."""

    #: raw-network output channels per image channel (EDM's iDDPM variant uses 2; all here use 1)
    out_channel_factor = 1

    def __init__(self, img_resolution, img_channels, label_dim, use_fp16, model_type,
                 precond_kwargs, model_kwargs):
        super().__init__()
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.label_dim = label_dim
        self.use_fp16 = use_fp16
        self.init_kwargs = _jsonable(dict(
            img_resolution=img_resolution, img_channels=img_channels, label_dim=label_dim,
            use_fp16=use_fp16, **precond_kwargs, model_type=model_type, **model_kwargs))
        self.model = build_network(
            model_type, type(self).__name__, img_resolution=img_resolution,
            in_channels=img_channels, out_channels=img_channels * self.out_channel_factor,
            label_dim=label_dim, **model_kwargs)

    def coefficients(self, sigma):
        """(c_skip, c_out, c_in, c_noise) for float32 ``sigma`` of shape (N, 1, 1, 1)."""
        raise NotImplementedError

    def round_sigma(self, sigma):
        """The noise level the network actually supports closest to ``sigma`` (identity here)."""
        return torch.as_tensor(sigma)

    def _labels(self, class_labels, batch, device):
        if self.label_dim == 0:
            if class_labels is not None:
                raise ValueError(
                    f'{type(self).__name__} is unconditional (label_dim=0) but was given class '
                    'labels: expected class_labels=None. Drop the labels, or load a conditional '
                    'network (label_dim > 0).')
            return None
        if class_labels is None:
            return torch.zeros(1, self.label_dim, device=device)
        labels = class_labels.to(device=device, dtype=torch.float32)
        if (labels.shape[-1] != self.label_dim
                or labels.reshape(-1, self.label_dim).shape[0] not in (1, batch)):
            raise ValueError(
                f'{type(self).__name__} got class_labels of shape {tuple(class_labels.shape)}: '
                f'expected one-hot (or soft) labels of shape ({batch}, {self.label_dim}) or '
                f'(1, {self.label_dim}). Convert class indices with '
                f'torch.nn.functional.one_hot(idx, {self.label_dim}).float().')
        return labels.reshape(-1, self.label_dim)

    def model_dtype(self, x, force_fp32=False):
        """float16 if ``use_fp16``, not ``force_fp32`` and ``x`` is on CUDA; else float32."""
        use_half = self.use_fp16 and not force_fp32 and x.device.type == 'cuda'
        return torch.float16 if use_half else torch.float32

    def forward(self, x, sigma, class_labels=None, force_fp32=False, **model_kwargs):
        if x.ndim != 4 or x.shape[1] != self.img_channels:
            raise ValueError(
                f'{type(self).__name__} got x of shape {tuple(x.shape)}: expected (N, '
                f'{self.img_channels}, H, W) images (img_channels={self.img_channels}). Pass a '
                'batch of images with the channel count the network was built for.')
        x = x.to(torch.float32)
        sigma = torch.as_tensor(sigma, device=x.device).to(torch.float32).reshape(-1, 1, 1, 1)
        labels = self._labels(class_labels, x.shape[0], x.device)
        dtype = self.model_dtype(x, force_fp32)
        c_skip, c_out, c_in, c_noise = self.coefficients(sigma)
        c_noise = torch.as_tensor(c_noise, device=x.device, dtype=torch.float32)
        c_noise = c_noise.flatten()
        if c_noise.numel() == 1:
            c_noise = c_noise.expand(x.shape[0])
        F_x = self.model((c_in * x).to(dtype), c_noise, class_labels=labels, **model_kwargs)
        if F_x.dtype != dtype:
            raise RuntimeError(
                f'The raw network of {type(self).__name__} returned {F_x.dtype} for {dtype} '
                'input: every layer must compute in the dtype of its input. This is a bug in the '
                'network implementation.')
        F_x = F_x[:, :self.img_channels].to(torch.float32)
        return c_skip * x + c_out * F_x


@MODELS.register_module()
class EDMPrecond(_Precond):
    """EDM preconditioning (Karras et al. 2022); default network ADM as in EDM."""

    def __init__(self, img_resolution, img_channels, label_dim=0, use_fp16=False, sigma_min=0,
                 sigma_max=float('inf'), sigma_data=0.5, model_type='DhariwalUNet',
                 **model_kwargs):
        super().__init__(img_resolution, img_channels, label_dim, use_fp16, model_type,
                         dict(sigma_min=sigma_min, sigma_max=sigma_max, sigma_data=sigma_data),
                         model_kwargs)
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.sigma_data = sigma_data

    def coefficients(self, sigma):
        sd2 = self.sigma_data ** 2
        c_skip = sd2 / (sigma ** 2 + sd2)
        c_out = sigma * self.sigma_data / (sigma ** 2 + sd2).sqrt()
        c_in = 1 / (sigma ** 2 + sd2).sqrt()
        c_noise = sigma.log() / 4
        return c_skip, c_out, c_in, c_noise


@MODELS.register_module()
class VPPrecond(_Precond):
    """Variance-preserving preconditioning (Song et al. 2021 VP SDE) in EDM's form."""

    def __init__(self, img_resolution, img_channels, label_dim=0, use_fp16=False, beta_d=19.9,
                 beta_min=0.1, M=1000, epsilon_t=1e-5, model_type='SongUNet', **model_kwargs):
        super().__init__(img_resolution, img_channels, label_dim, use_fp16, model_type,
                         dict(beta_d=beta_d, beta_min=beta_min, M=M, epsilon_t=epsilon_t),
                         model_kwargs)
        self.beta_d = beta_d
        self.beta_min = beta_min
        self.M = M
        self.epsilon_t = epsilon_t
        # float64 for Python numbers: EDM's float32 gives sigma_min = 2^-10 instead of 0.0010005
        # (no effect on sampling, whose sigma_min defaults to 0.002 > either value).
        self.sigma_min = float(self.sigma(epsilon_t))
        self.sigma_max = float(self.sigma(1))

    def sigma(self, t):
        """sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1); numbers are taken as float64."""
        t = t if torch.is_tensor(t) else torch.as_tensor(t, dtype=torch.float64)
        return (0.5 * self.beta_d * t ** 2 + self.beta_min * t).expm1().sqrt()

    def sigma_inv(self, sigma):
        """t(sigma), the inverse of :meth:`sigma` (the positive root of the quadratic in t)."""
        sigma = sigma if torch.is_tensor(sigma) else torch.as_tensor(sigma, dtype=torch.float64)
        root = (self.beta_min ** 2 + 2 * self.beta_d * (1 + sigma ** 2).log()).sqrt()
        return (root - self.beta_min) / self.beta_d

    def coefficients(self, sigma):
        c_in = 1 / (sigma ** 2 + 1).sqrt()
        c_noise = (self.M - 1) * self.sigma_inv(sigma)
        return 1, -sigma, c_in, c_noise


@MODELS.register_module()
class VEPrecond(_Precond):
    """Variance-exploding preconditioning (Song et al. 2021 VE SDE) in EDM's form."""

    def __init__(self, img_resolution, img_channels, label_dim=0, use_fp16=False, sigma_min=0.02,
                 sigma_max=100, model_type='SongUNet', **model_kwargs):
        super().__init__(img_resolution, img_channels, label_dim, use_fp16, model_type,
                         dict(sigma_min=sigma_min, sigma_max=sigma_max), model_kwargs)
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max

    def coefficients(self, sigma):
        return 1, sigma, 1, (0.5 * sigma).log()


PRECONDITIONERS = {'EDMPrecond': EDMPrecond, 'VPPrecond': VPPrecond, 'VEPrecond': VEPrecond}
