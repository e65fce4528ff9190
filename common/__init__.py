"""DiffTeacher's shared parts: the diffusion teacher, distiller parts, safe checkpoint IO.

Importing ``common`` (every config does, through ``custom_imports``) does three things once:
registers the stand-in for mmcv's compiled ops when they are absent (so mmseg/mmpose import on
mmcv-lite), routes mmengine's checkpoint loading through the safe loader, and registers this
package's modules (the ``DiffusionTeacher``, the ``Pretrained`` initializer) in mmengine's root
registries, where every OpenMMLab scope finds them.

Importing ``common`` is therefore not light: its registered classes are torch modules built on
mmengine's ``BaseModule``/``PretrainedInit``, and ``mmengine.model`` imports ``mmengine.optim``,
whose optimizer registry imports transformers' ``Adafactor`` (and with it peft) — most of the
import time, and paid by every training run anyway. Tools import ``common`` only after parsing
their arguments; the mmcv probe below imports nothing (mmcv is imported by mmseg/mmpose when they
need it).
"""
from .mmcv_compat import install_mmcv_ext_fallback

install_mmcv_ext_fallback()

from .io import patch_mmengine  # noqa: E402

patch_mmengine()

from . import distill, engine, io, teachers  # noqa: E402,F401
from .io.pretrained_init import SafePretrainedInit  # noqa: E402,F401

__version__ = '0.1.0'
