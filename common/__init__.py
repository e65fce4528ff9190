"""DiffTeacher's shared parts: the diffusion teacher, distiller parts, safe checkpoint IO.

Importing ``common`` (every config does, through ``custom_imports``) does three things once:
registers the stand-in for mmcv's compiled ops when they are absent (so mmseg/mmpose import on
mmcv-lite), routes mmengine's checkpoint loading through the safe loader, and registers this
package's modules (the ``DiffusionTeacher``, the ``Pretrained`` initializer) in mmengine's root
registries, where every OpenMMLab scope finds them.
"""
from .mmcv_compat import install_mmcv_ext_fallback

install_mmcv_ext_fallback()

from .io import patch_mmengine  # noqa: E402

patch_mmengine()

from . import distill, io, teachers  # noqa: E402,F401
from .io.pretrained_init import SafePretrainedInit  # noqa: E402,F401

__version__ = '0.1.0'
