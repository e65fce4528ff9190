"""One-step generation by Distribution Matching Distillation (DMD, DMD2) of an EDM teacher.

Work in progress (issue #9). What exists: EDM's networks (SongUNet = DDPM++/NCSN++, DhariwalUNet =
ADM) and preconditioners (EDM, VP, VE) with NVlabs/edm's ``state_dict`` keys, stored as
``config.json`` + ``model.safetensors`` (``load_edm`` / ``save_edm``); the safe converter of
EDM's ``.pkl`` files (``tools/convert/edm_to_safetensors.py``, nothing from the file is run);
EDM's Heun sampler (``sampling.edm_sampler``); and ``DiffusersDenoiser``, which turns any diffusers
DDPM (the digits demo teacher included) into the same ``D(x, sigma, labels)`` interface. Not yet:
the pair dataset, the DMD/DMD2 distiller, FID, configs, the demo.

Importing this package registers the networks, ``load_edm`` and ``DiffusersDenoiser`` in
mmengine's root ``MODELS``.
"""
from .adapters import DiffusersDenoiser
from .convert import EDMPickleError, convert_edm_pickle
from .networks import (DhariwalUNet, EDMLoadError, EDMPrecond, SongUNet, VEPrecond, VPPrecond,
                       load_edm, save_edm)
from .sampling import edm_sampler, edm_timesteps

__all__ = [
    'DiffusersDenoiser', 'EDMPickleError', 'convert_edm_pickle', 'DhariwalUNet', 'EDMLoadError',
    'EDMPrecond', 'SongUNet', 'VEPrecond', 'VPPrecond', 'load_edm', 'save_edm', 'edm_sampler',
    'edm_timesteps',
]
