"""EDM networks (SongUNet = DDPM++/NCSN++, DhariwalUNet = ADM) and EDM's preconditioners.

The one rule: module and parameter names follow NVlabs/edm exactly, so the ``state_dict()`` of
``EDMPrecond(..., model_type='SongUNet', ...)`` has the keys of EDM's released checkpoints
(``model.map_noise...``, ``model.enc.32x32_conv.weight``, ...) and loads them with
``strict=True``; networks are saved/loaded as ``config.json`` + ``model.safetensors`` folders
(:func:`load_edm`, :func:`save_edm`), never as pickles. Importing this package registers the
classes and ``load_edm`` in mmengine's root ``MODELS`` registry.
"""
from .dhariwal_unet import DhariwalUNet
from .loading import EDMLoadError, load_edm, save_edm
from .precond import NETWORKS, PRECONDITIONERS, EDMPrecond, VEPrecond, VPPrecond
from .song_unet import SongUNet

__all__ = ['SongUNet', 'DhariwalUNet', 'EDMPrecond', 'VPPrecond', 'VEPrecond', 'NETWORKS',
           'PRECONDITIONERS', 'load_edm', 'save_edm', 'EDMLoadError']
