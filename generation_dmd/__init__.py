"""One-step generation by Distribution Matching Distillation (DMD, DMD2) of an EDM teacher.

EDM's networks (SongUNet = DDPM++/NCSN++, DhariwalUNet = ADM) and preconditioners (EDM, VP, VE) with
NVlabs/edm's ``state_dict`` keys, stored as ``config.json`` + ``model.safetensors`` (``load_edm`` /
``save_edm``); the safe converter of EDM's ``.pkl`` files (nothing from the file is run); EDM's Heun
sampler; ``DiffusersDenoiser`` (any diffusers DDPM as ``D(x, sigma, labels)``); the pair dataset;
``DMDDistiller`` (DMD's distribution matching + regression, DMD2's two time-scale updates + GAN,
EMA, exact resume); the one-step ``OneStepGenerator`` and its folders; FID / IS by EDM's protocol
(``GenerationMetric``, proxies labelled as such).

Importing this package registers the networks, ``load_edm``, ``DiffusersDenoiser``,
``OneStepGenerator``, ``DMDDistiller``, the DMD losses, ``BottleneckClassifier`` and the feature
extractors in mmengine's root ``MODELS``; ``DMDPairDataset`` and ``GenerationSeedsDataset`` in
``DATASETS``; ``GenerationMetric`` in ``METRICS``; ``DMDOptimWrapperConstructor`` in
``OPTIM_WRAPPER_CONSTRUCTORS``.
"""
from .adapters import DiffusersDenoiser
from .convert import EDMPickleError, convert_edm_pickle
from .datasets import GenerationSeedsDataset
from .distiller import DMDBatchError, DMDDistiller
from .evaluation import (ClassifierFeatureExtractor, GenerationMetric, InceptionFeatureExtractor,
                         frechet_distance, inception_score, load_reference_stats,
                         save_reference_stats)
from .gan_head import BottleneckClassifier, default_bottleneck, resolve_bottleneck
from .generator import (GeneratorLoadError, OneStepGenerator, load_generator, save_generator,
                        to_uint8)
from .losses import (DistributionMatchingLoss, FakeScoreLoss, L2RegressionLoss,
                     LPIPSRegressionLoss, gan_discriminator_loss, gan_generator_loss,
                     karras_sigmas)
from .networks import (DhariwalUNet, EDMLoadError, EDMPrecond, SongUNet, VEPrecond, VPPrecond,
                       load_edm, save_edm)
from .optim import DMDOptimWrapperConstructor
from .pairs import DMDPairDataset, DMDPairError, build_pairs, pair_latents, pair_seed
from .sampling import edm_sampler, edm_timesteps

__all__ = [
    'DiffusersDenoiser', 'EDMPickleError', 'convert_edm_pickle', 'DhariwalUNet', 'EDMLoadError',
    'EDMPrecond', 'SongUNet', 'VEPrecond', 'VPPrecond', 'load_edm', 'save_edm', 'edm_sampler',
    'edm_timesteps', 'DMDPairDataset', 'DMDPairError', 'build_pairs', 'pair_latents', 'pair_seed',
    'GenerationSeedsDataset', 'DMDBatchError', 'DMDDistiller', 'ClassifierFeatureExtractor',
    'GenerationMetric', 'InceptionFeatureExtractor', 'frechet_distance', 'inception_score',
    'load_reference_stats', 'save_reference_stats', 'BottleneckClassifier', 'default_bottleneck',
    'resolve_bottleneck', 'GeneratorLoadError', 'OneStepGenerator', 'load_generator',
    'save_generator', 'to_uint8', 'DistributionMatchingLoss', 'FakeScoreLoss', 'L2RegressionLoss',
    'LPIPSRegressionLoss', 'gan_discriminator_loss', 'gan_generator_loss', 'karras_sigmas',
    'DMDOptimWrapperConstructor',
]
