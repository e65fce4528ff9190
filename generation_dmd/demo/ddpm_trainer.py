"""``VPredictionDDPMTrainer``: the digits teacher's trainer, predicting v instead of the noise.

Why (measured on the digits teacher, see generation_dmd/README.md): a GroupNorm UNet that
predicts the noise ``eps`` cannot reproduce the noise's per-image, per-channel MEAN (the last
GroupNorm before ``conv_out`` removes it): at sigma 10-80 its prediction keeps about 1/6 of that
mean. Ancestral DDPM/DDIM sampling hides this by clipping its x0 estimate, but EDM's Heun ODE
(``generation_dmd.sampling.edm_sampler``) integrates the missing mean from sigma 80 down to 0,
and every sample ends as a saturated colour field. Predicting
``v = sqrt(abar) eps - sqrt(1 - abar) x0`` (Salimans & Ho, 2022) asks the UNet for the CLEAN
image at high noise, whose mean is learnable, and takes the noise (mean included) straight from
the input; the same ODE then draws clean grey digits, and a one-step generator
``D(80 z; 80) ~ -v`` is well conditioned, as EDM's preconditioning makes it.

The one rule: the exported pipeline's scheduler says ``prediction_type='v_prediction'``, so every
reader (``DiffusersDenoiser``, diffusers' pipelines and schedulers, the export hook's sample grid)
interprets the UNet correctly; the UNet, its module names and the noise schedule are those of
``DDPMTrainer`` (``common.teachers.ddpm_trainer``), whose EMA, export and checkpoints this class
inherits unchanged.
"""
import torch.nn.functional as F
from mmengine.registry import MODELS

from common.teachers.ddpm_trainer import DDPMTrainer

PREDICTION_TYPES = ('epsilon', 'v_prediction')


@MODELS.register_module()
class VPredictionDDPMTrainer(DDPMTrainer):
    """:class:`~common.teachers.ddpm_trainer.DDPMTrainer` whose UNet predicts v (or epsilon).

    Args:
        prediction_type (str): ``'v_prediction'`` (default) or ``'epsilon'`` (then this is
            exactly ``DDPMTrainer``). Must not also be given inside ``scheduler``.
        Other arguments: as ``DDPMTrainer``.
    """

    def __init__(self, unet, scheduler=None, prediction_type='v_prediction', **kwargs):
        from diffusers import DDPMScheduler
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f'VPredictionDDPMTrainer: prediction_type={prediction_type!r}; expected one of '
                f'{PREDICTION_TYPES}. Fix model.prediction_type in the config.')
        scheduler = dict(scheduler or dict(num_train_timesteps=1000))
        if 'prediction_type' in scheduler:
            raise ValueError(
                f"VPredictionDDPMTrainer: scheduler.prediction_type={scheduler['prediction_type']!r}"
                f' is set by the model argument prediction_type instead; remove it from '
                f'model.scheduler.')
        super().__init__(unet, scheduler=scheduler, **kwargs)
        self.noise_scheduler = DDPMScheduler(**scheduler, prediction_type=prediction_type)
        self.prediction_type = prediction_type

    def loss(self, inputs, data_samples=None):
        x_t, t, eps = self.noisy_batch(inputs)
        target = eps if self.prediction_type == 'epsilon' else \
            self.noise_scheduler.get_velocity(inputs, eps, t)
        pred = self.unet(x_t, t, return_dict=False)[0]
        return dict(loss=F.mse_loss(pred.float(), target.float()))
