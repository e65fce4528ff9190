"""Load the parts of a diffusers pipeline that a teacher needs, exactly as a diffusers user would.

``pretrained`` is a local folder or a hub id. A folder is either a pipeline folder (``unet/`` plus
``scheduler/`` and, for latent models, ``vae/``, ``text_encoder(_2)/``, ``tokenizer(_2)/``) or a
bare UNet folder (``config.json`` of a ``UNet2DModel``), for which the standard DDPM noise
schedule is used.
"""
import dataclasses
import importlib
import json
import os
from typing import Any, Optional

import torch

from .errors import TeacherLoadError

UNET_CLASSES = ('UNet2DModel', 'UNet2DConditionModel')
COMPONENT_LIBRARIES = ('diffusers', 'transformers')


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


def _load_pipeline_folder(folder, dtype):
    index_path = os.path.join(folder, 'model_index.json')
    index = _read_json(index_path) if os.path.isfile(index_path) else {}
    unet_dir = os.path.join(folder, 'unet')
    unet_cls = _unet_class(_read_json(os.path.join(unet_dir, 'config.json')), unet_dir)
    unet = unet_cls.from_pretrained(unet_dir, torch_dtype=dtype)

    sched_cfg = os.path.join(folder, 'scheduler', 'scheduler_config.json')
    scheduler = noise_scheduler_from_config(
        _read_json(sched_cfg) if os.path.isfile(sched_cfg) else {})

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
    if unet_cls.__name__ == 'UNet2DConditionModel' and (vae is None or not text_encoders):
        raise TeacherLoadError(
            f'{folder}: a text-conditioned UNet needs vae/, text_encoder/ and tokenizer/ next to '
            f'unet/ (a Stable Diffusion pipeline folder).')
    return DiffusionComponents(unet, scheduler, vae, text_encoders, tokenizers, source=folder)


def _load_unet_folder(folder, dtype):
    cls = _unet_class(_read_json(os.path.join(folder, 'config.json')), folder)
    unet = cls.from_pretrained(folder, torch_dtype=dtype)
    steps = unet.config.get('num_train_timesteps') or 1000
    return DiffusionComponents(unet, noise_scheduler_from_config(dict(num_train_timesteps=steps)),
                               source=folder)


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


def load_diffusion_components(pretrained, dtype=torch.float32):
    """Load a teacher's components from a local folder or a hub id (see module docstring)."""
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
        return _load_pipeline_folder(folder, dtype)
    if os.path.isfile(os.path.join(folder, 'config.json')):
        return _load_unet_folder(folder, dtype)
    raise TeacherLoadError(
        f'pretrained={pretrained!r} is a folder but neither a diffusers pipeline (unet/config.json) '
        f'nor a UNet folder (config.json); its entries are {sorted(os.listdir(folder))[:10]}.')
