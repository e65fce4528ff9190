"""Wrap a discrete-time diffusers DDPM as an EDM denoiser ``D(x; sigma, class_labels)``.

EDM's samplers and DMD's losses speak in noise levels sigma on the *variance-exploding* scale
(``x = x0 + sigma * n``); a DDPM sees *variance-preserving* inputs
``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) n`` at integer timesteps. The two meet at
``sigma_t = sqrt((1 - abar_t) / abar_t)`` and ``x_t = x / sqrt(1 + sigma^2)``.

The one rule: sigma must lie inside the schedule's trained range
``[sigma_min, sigma_max] = [sigma_0, sigma_{T-1}]`` (``edm_sampler`` clips its range to these
properties); noise levels between two training timesteps are either fed to the UNet as a
fractional timestep, linearly interpolated in log-sigma (``timestep='interpolate'``, the default;
diffusers' sinusoidal time embedding accepts real-valued timesteps), or snapped to the nearest
training timestep in log-sigma (``timestep='nearest'``, where ``round_sigma`` rounds to the same
table so the sampler only asks for trained noise levels).
"""
import torch
from mmengine.registry import MODELS

PREDICTION_TYPES = ('epsilon', 'v_prediction', 'sample')
TIMESTEP_MODES = ('interpolate', 'nearest')


@MODELS.register_module()
class DiffusersDenoiser(torch.nn.Module):
    """EDM-style denoiser ``D(x; sigma)`` over a diffusers ``UNet2DModel`` and its noise schedule.

    Args:
        pretrained: a diffusers pipeline folder (``unet/`` + ``scheduler/``), a bare UNet folder
            (then ``noise_schedule`` is required) or a hub id; loaded with
            ``common.teachers.loading.load_diffusion_components``.
        unet / scheduler: the components themselves, instead of ``pretrained``.
        noise_schedule: DDPMScheduler arguments stating the training betas (see the loader).
        prediction_type: ``'epsilon'``, ``'v_prediction'`` or ``'sample'``; default: the
            scheduler config's ``prediction_type``.
        timestep: ``'interpolate'`` (fractional timesteps) or ``'nearest'`` (see module doc).
        dtype: the UNet's dtype when loading from ``pretrained``.

    ``forward(x, sigma, class_labels=None)`` takes ``x`` (B, C, H, W) on the EDM scale, ``sigma``
    a number, a 0-d / (B,) / (B, 1, 1, 1) tensor, and for class-conditional UNets integer labels
    (B,) or one-hot (B, K) (EDM's convention); it returns ``D`` in ``x``'s dtype. The UNet is a
    registered submodule: its weights are this module's ``state_dict``.
    """

    def __init__(self, pretrained=None, unet=None, scheduler=None, noise_schedule=None,
                 prediction_type=None, timestep='interpolate', dtype=torch.float32):
        super().__init__()
        if (pretrained is None) == (unet is None):
            raise ValueError(
                'DiffusersDenoiser needs exactly one source: pretrained=<pipeline folder or hub '
                'id>, or unet=<UNet2DModel> together with scheduler=<diffusers scheduler>; got '
                f'pretrained={pretrained!r} and unet={type(unet).__name__}.')
        if pretrained is not None:
            from common.teachers.loading import load_diffusion_components
            components = load_diffusion_components(pretrained, dtype=dtype,
                                                   noise_schedule=noise_schedule)
            unet, scheduler = components.unet, components.noise_scheduler
            where = f'pretrained={pretrained!r}'
        else:
            where = f'unet={type(unet).__name__}'
            if scheduler is None or not hasattr(scheduler, 'alphas_cumprod'):
                raise ValueError(
                    f'{where}: scheduler={type(scheduler).__name__} has no alphas_cumprod; pass '
                    f'the diffusers scheduler the UNet was trained with (e.g. '
                    f'DDPMScheduler.from_pretrained(folder, subfolder="scheduler")).')
        if type(unet).__name__ != 'UNet2DModel':
            raise ValueError(
                f'{where}: the UNet is a {type(unet).__name__}; DiffusersDenoiser wraps '
                f'unconditional or class-conditional pixel/latent UNet2DModel DDPMs only '
                f'(text-conditioned UNets need prompt embeddings that D(x; sigma, labels) '
                f'cannot carry).')
        config = unet.config
        if getattr(config, 'time_embedding_type', 'positional') == 'fourier':
            raise ValueError(
                f'{where}: the UNet uses Fourier time embeddings (a score-SDE model that takes '
                f'sigma, not a DDPM timestep); DiffusersDenoiser needs a positional-embedding '
                f'DDPM UNet.')
        if prediction_type is None:
            prediction_type = scheduler.config.get('prediction_type', 'epsilon')
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f'{where}: prediction_type={prediction_type!r} is not supported; expected one of '
                f'{PREDICTION_TYPES} (set prediction_type= to what the UNet was trained to '
                f'predict, or fix scheduler/scheduler_config.json).')
        if timestep not in TIMESTEP_MODES:
            raise ValueError(f"timestep={timestep!r}: expected one of {TIMESTEP_MODES} "
                             f"('interpolate' feeds fractional timesteps, 'nearest' snaps to "
                             f'the nearest training timestep).')
        self.unet = unet
        # Kept so the denoiser can be written back as a pipeline folder (save_generator).
        self.scheduler_class = type(scheduler).__name__
        self.scheduler_config = dict(getattr(scheduler, 'config', {}) or {})
        self.prediction_type = prediction_type
        self.timestep = timestep
        abar = torch.as_tensor(scheduler.alphas_cumprod, dtype=torch.float64)
        sigmas = ((1 - abar) / abar).sqrt()
        if not bool((sigmas[1:] > sigmas[:-1]).all()) or not bool(sigmas[0] > 0):
            raise ValueError(
                f'{where}: the schedule\'s sigma_t = sqrt((1 - abar_t) / abar_t) must be positive '
                f'and strictly increasing in t (a zero-terminal-SNR or non-monotone schedule '
                f'cannot be mapped to EDM noise levels); check the scheduler config.')
        # float64 log-sigma of every training timestep; not weights, so not in state_dict().
        self.register_buffer('log_sigmas', sigmas.log(), persistent=False)
        self.in_channels = config.in_channels
        self.num_classes = getattr(config, 'num_class_embeds', None)
        if self.num_classes is None and getattr(config, 'class_embed_type', None) is not None:
            self.num_classes = -1  # conditional through another embedding: labels passed as-is
        self.learned_variance = config.out_channels == 2 * config.in_channels

    @property
    def sigma_min(self):
        """The smallest trained noise level, sigma at timestep 0."""
        return float(self.log_sigmas[0].exp())

    @property
    def sigma_max(self):
        """The largest trained noise level, sigma at the last training timestep."""
        return float(self.log_sigmas[-1].exp())

    def sigma_to_timestep(self, sigma):
        """Float64 timesteps for noise levels ``sigma`` (a tensor), per the ``timestep`` mode."""
        log_sigma = sigma.to(torch.float64).log()
        table = self.log_sigmas.to(log_sigma.device)
        if self.timestep == 'nearest':
            return (log_sigma[..., None] - table).abs().argmin(-1).to(torch.float64)
        lo = (torch.searchsorted(table, log_sigma.contiguous(), right=True) - 1) \
            .clamp(0, len(table) - 2)
        frac = (log_sigma - table[lo]) / (table[lo + 1] - table[lo])
        return lo.to(torch.float64) + frac

    def round_sigma(self, sigma):
        """``sigma`` as a tensor; in ``'nearest'`` mode snapped to the nearest trained level."""
        sigma = torch.as_tensor(sigma)
        if self.timestep == 'interpolate':
            return sigma
        t = self.sigma_to_timestep(sigma).long()
        return self.log_sigmas.to(sigma.device)[t].exp().to(sigma.dtype)

    def _check_inputs(self, x, sigma, class_labels):
        if not torch.is_tensor(x) or x.dim() != 4 or x.shape[1] != self.in_channels:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(
                f'DiffusersDenoiser: x has shape {shape}; expected (batch, {self.in_channels}, '
                f'height, width), the UNet\'s input channels. Pass images (or latents) batch first.')
        batch = x.shape[0]
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device)
        if sigma.numel() not in (1, batch) or (sigma.dim() > 1 and sigma.dim() != 4):
            raise ValueError(
                f'DiffusersDenoiser: sigma has shape {tuple(sigma.shape)} for a batch of {batch}; '
                f'expected a number, a 0-d tensor, ({batch},) or ({batch}, 1, 1, 1).')
        sigma = sigma.reshape(-1).expand(batch)
        lo, hi = self.sigma_min, self.sigma_max
        if bool((sigma < lo * (1 - 1e-6)).any()) or bool((sigma > hi * (1 + 1e-6)).any()):
            raise ValueError(
                f'DiffusersDenoiser: sigma in [{float(sigma.min()):.6g}, {float(sigma.max()):.6g}] '
                f'leaves the range the DDPM was trained on, [{lo:.6g}, {hi:.6g}] (its sigma_min/'
                f'sigma_max); clip the noise levels to it (edm_sampler does this by itself).')
        sigma = sigma.clamp(lo, hi)
        if self.num_classes is None:
            if class_labels is not None:
                raise ValueError(
                    'DiffusersDenoiser: class_labels were given but the UNet is unconditional '
                    '(num_class_embeds is None); pass class_labels=None.')
            return sigma, None
        if class_labels is None:
            raise ValueError(
                f'DiffusersDenoiser: the UNet is class-conditional ({self.num_classes} classes) '
                f'but class_labels is None; pass integer labels ({batch},) or one-hot '
                f'({batch}, {self.num_classes}).')
        labels = torch.as_tensor(class_labels, device=x.device)
        if labels.dim() == 2 and self.num_classes > 0:
            if labels.shape[1] != self.num_classes:
                raise ValueError(
                    f'DiffusersDenoiser: one-hot class_labels have {labels.shape[1]} columns; '
                    f'the UNet has {self.num_classes} classes.')
            labels = labels.argmax(1)
        if labels.shape[0] != batch or labels.dim() != 1:
            raise ValueError(
                f'DiffusersDenoiser: class_labels has shape {tuple(labels.shape)}; expected '
                f'({batch},) integer labels or ({batch}, {self.num_classes}) one-hot.')
        return sigma, labels.long() if self.num_classes > 0 else labels

    def forward(self, x, sigma, class_labels=None):
        sigma, labels = self._check_inputs(x, sigma, class_labels)
        s = sigma.view(-1, 1, 1, 1)
        scale = (1 + s ** 2).rsqrt()  # x_t = x / sqrt(1 + sigma^2) = sqrt(abar) x
        timesteps = self.sigma_to_timestep(sigma)
        param = next(self.unet.parameters())
        out = self.unet((x.to(torch.float64) * scale).to(param.dtype),
                        timesteps.to(param.dtype if self.timestep == 'interpolate'
                                     else torch.long),
                        class_labels=labels).sample.to(torch.float64)
        if self.learned_variance:
            out = out[:, :self.in_channels]
        x64 = x.to(torch.float64)
        if self.prediction_type == 'epsilon':
            denoised = x64 - s * out
        elif self.prediction_type == 'v_prediction':
            # x0 = sqrt(abar) x_t - sqrt(1 - abar) v, with sqrt(abar) = scale, sqrt(1-abar) = s scale
            denoised = scale * (x64 * scale - s * out)
        else:
            denoised = out
        return denoised.to(x.dtype)
