"""One-step generation by Distribution Matching Distillation (DMD, DMD2) of an EDM teacher.

Work in progress (issue #9). What exists: EDM's networks (SongUNet = DDPM++/NCSN++, DhariwalUNet =
ADM) and preconditioners (EDM, VP, VE) with NVlabs/edm's ``state_dict`` keys, stored as
``config.json`` + ``model.safetensors`` (``load_edm`` / ``save_edm``); the safe converter of
EDM's ``.pkl`` files (``tools/convert/edm_to_safetensors.py``, nothing from the file is run);
EDM's Heun sampler (``sampling.edm_sampler``); and ``DiffusersDenoiser``, which turns any diffusers
DDPM (the digits demo teacher included) into the same ``D(x, sigma, labels)`` interface; the pair
dataset (``pairs``: distinct seeds per class, resumable shards, ``tools/build_dmd_pairs.py``). Not
yet: the DMD/DMD2 distiller, FID, configs, the demo.

Importing this package registers the networks, ``load_edm`` and ``DiffusersDenoiser`` in
mmengine's root ``MODELS`` and ``DMDPairDataset`` in its root ``DATASETS``.
"""
from .adapters import DiffusersDenoiser
from .convert import EDMPickleError, convert_edm_pickle
from .networks import (DhariwalUNet, EDMLoadError, EDMPrecond, SongUNet, VEPrecond, VPPrecond,
                       load_edm, save_edm)
from .pairs import DMDPairDataset, DMDPairError, build_pairs, pair_latents, pair_seed
from .sampling import edm_sampler, edm_timesteps

__all__ = [
    'DiffusersDenoiser', 'EDMPickleError', 'convert_edm_pickle', 'DhariwalUNet', 'EDMLoadError',
    'EDMPrecond', 'SongUNet', 'VEPrecond', 'VPPrecond', 'load_edm', 'save_edm', 'edm_sampler',
    'edm_timesteps', 'DMDPairDataset', 'DMDPairError', 'build_pairs', 'pair_latents', 'pair_seed',
]
