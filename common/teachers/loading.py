"""Load the parts of a diffusers pipeline that a teacher needs, exactly as a diffusers user would.

``pretrained`` is a local folder or a hub id. A folder is either a pipeline folder (``unet/`` plus
``scheduler/`` and, for latent models, ``vae/``, ``text_encoder(_2)/``, ``tokenizer(_2)/``) or a
bare UNet folder (``config.json`` of a ``UNet2DModel``). A text-conditioned pipeline folder may
lack ``vae/`` only when its UNet works on pixels (``in_channels`` 1 or 3): a pixel-space
text-to-image model.

The one rule: the noise schedule is never guessed. It comes from the pipeline's
``scheduler/scheduler_config.json`` or from an explicit ``noise_schedule`` (a bare UNet folder, or a
pipeline folder without a scheduler); with neither, loading fails (a default linear schedule is
wrong for cosine-schedule models such as guided-diffusion's).
"""
import dataclasses
import importlib
import json
import os
from typing import Any, Optional

import logging

import torch
from mmengine.logging import print_log

from .errors import TeacherConfigError, TeacherLoadError

UNET_CLASSES = ('UNet2DModel', 'UNet2DConditionModel')
# What ``noise_schedule`` may state: the keys every diffusers scheduler shares for its betas.
NOISE_SCHEDULE_KEYS = ('num_train_timesteps', 'beta_start', 'beta_end', 'beta_schedule',
                       'trained_betas', 'rescale_betas_zero_snr')
COMPONENT_LIBRARIES = ('diffusers', 'transformers')
# Image channels of a pixel-space text-conditioned UNet (a pipeline folder without vae/).
PIXEL_CHANNELS = (1, 3)


@dataclasses.dataclass
class DiffusionComponents:
    """What a teacher runs: the UNet, the forward-noising schedule and, for latent models, the
    VAE and the text encoders with their tokenizers."""
    unet: torch.nn.Module
    noise_scheduler: Any  # a diffusers DDPMScheduler built from the pipeline's betas
    vae: Optional[torch.nn.Module] = None
    text_encoders: tuple = ()
    tokenizers: tuple = ()
    source: str = ''

    @property
    def is_latent(self):
        return self.vae is not None

    @property
    def is_text_conditioned(self):
        return type(self.unet).__name__ == 'UNet2DConditionModel'

    @property
    def is_sdxl(self):
        return len(self.text_encoders) == 2

    def modules(self):
        return dict(unet=self.unet, vae=self.vae,
                    **{f'text_encoder_{i}': m for i, m in enumerate(self.text_encoders)})


def _read_json(path):
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def _component_class(library, class_name, where):
    if library not in COMPONENT_LIBRARIES:
        raise TeacherLoadError(
            f'{where}: component library {library!r} is not supported (only '
            f'{COMPONENT_LIBRARIES}); the folder is probably not a diffusers pipeline.')
    cls = getattr(importlib.import_module(library), class_name, None)
    if cls is None:
        raise TeacherLoadError(f'{where}: {library} has no class {class_name!r}; upgrade {library} '
                               f'or check the folder.')
    return cls


def _unet_class(config, where):
    name = config.get('_class_name')
    if name not in UNET_CLASSES:
        raise TeacherLoadError(
            f'{where}: the UNet config says _class_name={name!r}; a teacher needs one of '
            f'{UNET_CLASSES}.')
    return _component_class('diffusers', name, where)


def noise_scheduler_from_config(config):
    """A DDPMScheduler with the same betas as the pipeline's scheduler (any diffusers scheduler
    config: they share beta_start/beta_end/beta_schedule/num_train_timesteps/trained_betas)."""
    from diffusers import DDPMScheduler
    keys = ('num_train_timesteps', 'beta_start', 'beta_end', 'beta_schedule', 'trained_betas',
            'prediction_type', 'timestep_spacing', 'steps_offset', 'rescale_betas_zero_snr')
    return DDPMScheduler(**{k: v for k, v in dict(config).items() if k in keys})


def check_noise_schedule(noise_schedule):
    """Validate a user-stated ``noise_schedule`` dict; return it as a plain dict (or None)."""
    if noise_schedule is None:
        return None
    if not isinstance(noise_schedule, dict) or 'beta_schedule' not in noise_schedule and \
            'trained_betas' not in noise_schedule:
        raise TeacherConfigError(
            f'noise_schedule={noise_schedule!r} must be a dict naming the betas the model was '
            f"trained with, e.g. dict(beta_schedule='linear', beta_start=1e-4, beta_end=0.02, "
            f"num_train_timesteps=1000) or dict(beta_schedule='squaredcos_cap_v2', "
            f'num_train_timesteps=1000) (diffusers DDPMScheduler arguments).')
    unknown = sorted(set(noise_schedule) - set(NOISE_SCHEDULE_KEYS))
    if unknown:
        raise TeacherConfigError(
            f'noise_schedule has keys {unknown} that do not describe a noise schedule; allowed '
            f'keys are {NOISE_SCHEDULE_KEYS} (diffusers DDPMScheduler arguments). Remove them.')
    return dict(noise_schedule)


def _scheduler(folder, sched_cfg, noise_schedule, where):
    """The forward-noising schedule: the folder's own scheduler config or ``noise_schedule``."""
    own = _read_json(sched_cfg) if sched_cfg and os.path.isfile(sched_cfg) else None
    if own is None and noise_schedule is None:
        missing = (f'{sched_cfg} not found' if sched_cfg else
                   'a bare UNet folder has no scheduler/scheduler_config.json')
        raise TeacherLoadError(
            f'{where}: the noise schedule the model was trained with is missing ({missing}), '
            f'and a default would silently be wrong for models not trained with the linear DDPM '
            f"schedule (guided-diffusion's cosine models, Stable Diffusion's scaled_linear). Add "
            f"scheduler/scheduler_config.json from the model's release (a pipeline folder), "
            f"or state the schedule in the teacher config, e.g. noise_schedule=dict("
            f"beta_schedule='linear', beta_start=1e-4, beta_end=0.02, num_train_timesteps=1000) "
            f"or noise_schedule=dict(beta_schedule='squaredcos_cap_v2', "
            f'num_train_timesteps=1000).')
    if noise_schedule is None:
        return noise_scheduler_from_config(own)
    try:
        scheduler = noise_scheduler_from_config(noise_schedule)
    except (NotImplementedError, ValueError, TypeError) as err:
        raise TeacherConfigError(
            f'noise_schedule={noise_schedule} is not a schedule diffusers can build ({err}). Use '
            f"beta_schedule 'linear', 'scaled_linear' or 'squaredcos_cap_v2', or trained_betas "
            f'(a list of num_train_timesteps betas).') from None
    if own is not None:
        theirs = noise_scheduler_from_config(own).alphas_cumprod
        if theirs.shape != scheduler.alphas_cumprod.shape or \
                not torch.allclose(theirs, scheduler.alphas_cumprod):
            print_log(
                f'{where}: the configured noise_schedule={noise_schedule} differs from the '
                f"pipeline's own {sched_cfg}; the configured one is used. Remove noise_schedule "
                f'from the teacher config to use the pipeline\'s.', logger='current',
                level=logging.WARNING)
    return scheduler


def _load_pipeline_folder(folder, dtype, noise_schedule=None):
    index_path = os.path.join(folder, 'model_index.json')
    index = _read_json(index_path) if os.path.isfile(index_path) else {}
    unet_dir = os.path.join(folder, 'unet')
    unet_cls = _unet_class(_read_json(os.path.join(unet_dir, 'config.json')), unet_dir)
    unet = unet_cls.from_pretrained(unet_dir, torch_dtype=dtype)
    scheduler = _scheduler(folder, os.path.join(folder, 'scheduler', 'scheduler_config.json'),
                           noise_schedule, folder)

    def load(name):
        path = os.path.join(folder, name)
        if not os.path.isdir(path):
            return None
        library, class_name = index.get(name, (None, None)) or (None, None)
        if class_name is None:
            raise TeacherLoadError(
                f'{folder}: subfolder {name}/ exists but model_index.json does not name its '
                f'class; re-save the pipeline with diffusers save_pretrained.')
        cls = _component_class(library, class_name, path)
        kwargs = {} if name.startswith('tokenizer') else dict(torch_dtype=dtype)
        return cls.from_pretrained(path, **kwargs)

    vae = load('vae')
    text_encoders = tuple(m for m in (load('text_encoder'), load('text_encoder_2')) if m)
    tokenizers = tuple(m for m in (load('tokenizer'), load('tokenizer_2')) if m)
    if unet_cls.__name__ == 'UNet2DConditionModel':
        _check_text_conditioned(folder, unet, vae, text_encoders)
    return DiffusionComponents(unet, scheduler, vae, text_encoders, tokenizers, source=folder)


def _check_text_conditioned(folder, unet, vae, text_encoders):
    """A text-conditioned UNet needs its text encoder, and a VAE unless it works on pixels
    (``in_channels`` equal to the image channels, 1 or 3, and no ``vae/``)."""
    in_channels = unet.config.in_channels
    pixel_space = vae is None and in_channels in PIXEL_CHANNELS
    if (vae is None and not pixel_space) or not text_encoders:
        raise TeacherLoadError(
            f'{folder}: a text-conditioned UNet needs vae/, text_encoder/ and tokenizer/ next to '
            f'unet/ (a Stable Diffusion pipeline folder). A pixel-space text-conditioned '
            f'pipeline (no vae/) is accepted only when the UNet takes images directly '
            f'(in_channels {" or ".join(map(str, PIXEL_CHANNELS))}); this one has '
            f'in_channels={in_channels}, text_encoder/: {"yes" if text_encoders else "no"}.')


def _load_unet_folder(folder, dtype, noise_schedule=None):
    cls = _unet_class(_read_json(os.path.join(folder, 'config.json')), folder)
    scheduler = _scheduler(folder, None, noise_schedule, folder)
    unet = cls.from_pretrained(folder, torch_dtype=dtype)
    return DiffusionComponents(unet, scheduler, source=folder)


def _download(repo_id):
    try:
        from huggingface_hub import snapshot_download
        return snapshot_download(
            repo_id, allow_patterns=['*.json', '*.txt', '*.safetensors', '*.model'])
    except Exception as err:  # noqa: BLE001 - any hub failure gets the same advice
        raise TeacherLoadError(
            f'pretrained={repo_id!r} is not a local folder and could not be fetched from the '
            f'Hugging Face hub ({type(err).__name__}: {str(err).splitlines()[0][:200]}). Model '
            f'hubs may be offline or unreachable from this machine (HF_HUB_OFFLINE='
            f'{os.environ.get("HF_HUB_OFFLINE", "unset")}). Download the pipeline on a machine '
            f'that is online (e.g. `huggingface-cli download {repo_id} --local-dir '
            f'checkpoints/{repo_id.split("/")[-1]}`), copy the folder here and set '
            f"pretrained='checkpoints/{repo_id.split('/')[-1]}'.") from None


def load_diffusion_components(pretrained, dtype=torch.float32, noise_schedule=None):
    """Load a teacher's components from a local folder or a hub id (see module docstring).

    ``noise_schedule`` (dict of DDPMScheduler arguments, see ``NOISE_SCHEDULE_KEYS``) states the
    training noise schedule; required for a bare UNet folder or a pipeline folder without
    ``scheduler/scheduler_config.json``, and it overrides a pipeline's own (with a warning when
    they differ).
    """
    noise_schedule = check_noise_schedule(noise_schedule)
    if not isinstance(pretrained, str) or not pretrained:
        raise TeacherLoadError(f'pretrained must be a folder path or a hub id, got {pretrained!r}.')
    folder = os.path.expanduser(pretrained)
    if not os.path.isdir(folder):
        looks_like_path = folder.startswith(('.', '/', '~')) or folder.count('/') != 1
        if looks_like_path:
            raise TeacherLoadError(
                f'pretrained={pretrained!r}: no such folder (resolved from {os.getcwd()!r}). '
                f'Point it at a diffusers pipeline folder (with unet/ and scheduler/) or use a hub '
                f"id such as 'google/ddpm-cifar10-32' on a machine that is online.")
        folder = _download(pretrained)
    if os.path.isfile(os.path.join(folder, 'unet', 'config.json')):
        return _load_pipeline_folder(folder, dtype, noise_schedule)
    if os.path.isfile(os.path.join(folder, 'config.json')):
        return _load_unet_folder(folder, dtype, noise_schedule)
    raise TeacherLoadError(
        f'pretrained={pretrained!r} is a folder but neither a diffusers pipeline (unet/config.json) '
        f'nor a UNet folder (config.json); its entries are {sorted(os.listdir(folder))[:10]}.')
