"""``DDPMTrainer``: train a small pixel DDPM (a diffusers ``UNet2DModel``) as an mmengine model.

For images ``x0`` in [-1, 1] (the data preprocessor maps 0..255 there), a timestep ``t`` drawn
uniformly from ``[0, num_train_timesteps)``, Gaussian noise ``eps`` and
``x_t = scheduler.add_noise(x0, eps, t)``, the loss is ``mse(unet(x_t, t), target)`` where the
target is chosen by ``prediction_type``:

- ``'epsilon'``: the noise (Ho et al., 2020);
- ``'v_prediction'``: ``v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0`` (Salimans & Ho, 2022). The
  digits demo teacher predicts v. Why (measured, see generation_dmd/README.md): a GroupNorm UNet
  predicting ``eps`` cannot reproduce the noise's per-image, per-channel MEAN (the last GroupNorm
  before ``conv_out`` removes it; at sigma 10-80 it keeps about 1/6 of it). Ancestral DDPM/DDIM
  sampling hides this by clipping its x0 estimate, but EDM's Heun ODE
  (``generation_dmd.sampling.edm_sampler``) integrates the missing mean from sigma 80 down to 0
  and every sample ends as a saturated colour field. Predicting v asks the UNet for the CLEAN
  image at high noise, whose mean is learnable, and a one-step generator ``D(80 z; 80) ~ -v`` is
  well conditioned.

The exported pipeline's scheduler carries ``prediction_type``, so every reader
(``DiffusersDenoiser``, diffusers' pipelines and schedulers, the export hook's sample grid)
interprets the UNet correctly.

The model keeps an exponential moving average of the UNet weights (``ema_decay``), updated after
every optimizer step in :meth:`DDPMTrainer.train_step`; :meth:`DDPMTrainer.export_pipeline` hands
out the EMA weights when EMA is on. The trained teacher leaves the run as a diffusers pipeline
folder (see ``common/engine/export_pipeline_hook.py``), which
``DiffusionTeacher(pretrained=folder)`` loads like any downloaded teacher.

Distributed training: mmengine's ``MMDistributedDataParallel`` calls the wrapped model's parts
itself and never ``DDPMTrainer.train_step``, so the built-in EMA is not updated there. For
several processes set ``ema_decay=None`` and add mmengine's ``EMAHook`` to ``custom_hooks``: the
export hook then exports the hook's averaged weights.
"""
import copy
import logging

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model import BaseModel
from mmengine.registry import MODELS

DEFAULT_PREPROCESSOR = dict(type='ImgDataPreprocessor', mean=[127.5] * 3, std=[127.5] * 3)
PREDICTION_TYPES = ('epsilon', 'v_prediction')


@MODELS.register_module()
class DDPMTrainer(BaseModel):
    """A pixel DDPM in training: a diffusers ``UNet2DModel`` and its ``DDPMScheduler``.

    Args:
        unet (dict): ``diffusers.UNet2DModel`` keyword arguments.
        scheduler (dict): ``diffusers.DDPMScheduler`` keyword arguments (default: the standard
            1000-step linear schedule), without ``prediction_type``.
        prediction_type (str): what the UNet predicts: ``'epsilon'`` (default) or
            ``'v_prediction'``; written into the exported scheduler.
        ema_decay (float | None): decay of the EMA of the UNet weights; None turns EMA off.
        ema_warmup (bool): use ``min(ema_decay, (1 + n) / (10 + n))`` at update ``n`` so that a
            short run's EMA is not dominated by the random initial weights.
        data_preprocessor (dict | None): must map 0..255 images to [-1, 1] (the default does).
        init_cfg (dict | None): mmengine initialisation config.
    """

    def __init__(self,
                 unet,
                 scheduler=None,
                 prediction_type='epsilon',
                 ema_decay=0.999,
                 ema_warmup=True,
                 data_preprocessor=None,
                 init_cfg=None):
        from diffusers import DDPMScheduler, UNet2DModel
        super().__init__(data_preprocessor=data_preprocessor or dict(DEFAULT_PREPROCESSOR),
                         init_cfg=init_cfg)
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f'DDPMTrainer: prediction_type={prediction_type!r}; expected one of '
                f'{PREDICTION_TYPES}. Fix model.prediction_type in the config.')
        scheduler = dict(scheduler or dict(num_train_timesteps=1000))
        if 'prediction_type' in scheduler:
            raise ValueError(
                f"DDPMTrainer: scheduler.prediction_type={scheduler['prediction_type']!r} is set "
                f'by the model argument prediction_type instead (default epsilon); remove it '
                f'from model.scheduler and write model.prediction_type=... .')
        self.unet = UNet2DModel(**unet)
        self.noise_scheduler = DDPMScheduler(**scheduler, prediction_type=prediction_type)
        self.prediction_type = prediction_type
        if ema_decay is not None and not 0.0 < float(ema_decay) < 1.0:
            raise ValueError(f'ema_decay must be in (0, 1) or None, got {ema_decay}.')
        self.ema_decay = None if ema_decay is None else float(ema_decay)
        self.ema_warmup = ema_warmup
        if self.ema_decay is not None:
            self.ema_unet = copy.deepcopy(self.unet).requires_grad_(False).eval()
            # Updates done so far; saved in checkpoints so a resumed run continues the warm-up.
            self.register_buffer('ema_steps', torch.zeros((), dtype=torch.long))
        else:
            self.ema_unet = None

    @property
    def num_train_timesteps(self):
        return int(self.noise_scheduler.config.num_train_timesteps)

    def train(self, mode=True):
        super().train(mode)
        if self.ema_unet is not None:
            self.ema_unet.eval()
        return self

    # ------------------------------------------------------------------ the objective
    def noisy_batch(self, x0, generator=None):
        """``(x_t, t, eps)`` for clean images ``x0`` in [-1, 1]: uniform ``t``, Gaussian ``eps``."""
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        t = torch.randint(0, self.num_train_timesteps, (x0.shape[0], ), generator=generator,
                          device=x0.device)
        return self.noise_scheduler.add_noise(x0, eps, t), t, eps

    def loss(self, inputs, data_samples=None):
        x_t, t, eps = self.noisy_batch(inputs)
        target = eps if self.prediction_type == 'epsilon' else \
            self.noise_scheduler.get_velocity(inputs, eps, t)
        pred = self.unet(x_t, t, return_dict=False)[0]
        return dict(loss=F.mse_loss(pred.float(), target.float()))

    def forward(self, inputs, data_samples=None, mode='tensor'):
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            # Nothing to predict for a generative model: the samples pass through untouched so
            # that a stray val/test loop does no harm.
            return list(data_samples) if data_samples is not None else []
        if mode == 'tensor':
            x_t, t, _ = self.noisy_batch(inputs)
            return self.unet(x_t, t, return_dict=False)[0]
        raise ValueError(f'DDPMTrainer: unknown mode {mode!r} (loss, predict or tensor).')

    # ------------------------------------------------------------------ EMA
    def train_step(self, data, optim_wrapper):
        log_vars = super().train_step(data, optim_wrapper)
        if self.ema_unet is not None:
            self.update_ema()
        return log_vars

    @torch.no_grad()
    def update_ema(self):
        """One EMA step towards the current UNet weights (the first one copies them)."""
        n = int(self.ema_steps)
        decay = self.ema_decay
        if self.ema_warmup:
            decay = min(decay, (1 + n) / (10 + n))
        if n == 0:
            decay = 0.0
        for ema, param in zip(self.ema_unet.parameters(), self.unet.parameters()):
            ema.lerp_(param.detach().to(ema.dtype), 1.0 - decay)
        for ema, buf in zip(self.ema_unet.buffers(), self.unet.buffers()):
            ema.copy_(buf)
        self.ema_steps += 1

    # ------------------------------------------------------------------ export
    def export_unet(self):
        """A detached eval-mode copy of the UNet to ship: the EMA weights when EMA is on."""
        unet = self.unet
        if self.ema_unet is not None:
            if int(self.ema_steps) > 0:
                unet = self.ema_unet
            else:
                print_log('DDPMTrainer: EMA is on but was never updated (no training step ran '
                          'through DDPMTrainer.train_step); exporting the raw UNet weights.',
                          logger='current', level=logging.WARNING)
        return copy.deepcopy(unet).requires_grad_(False).eval()

    def export_pipeline(self):
        """``diffusers.DDPMPipeline`` of the exported UNet and a copy of the noise scheduler."""
        from diffusers import DDPMPipeline, DDPMScheduler
        scheduler = DDPMScheduler.from_config(self.noise_scheduler.config)
        return DDPMPipeline(unet=self.export_unet().cpu(), scheduler=scheduler)
