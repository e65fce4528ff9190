"""The one-step generator DMD trains: a denoiser evaluated once, at a fixed top noise level.

``G(z) = D(sigma * z; sigma, labels)`` for standard-normal ``z``: the teacher's own network (an EDM
preconditioner or a :class:`~generation_dmd.adapters.DiffusersDenoiser`) asked to denoise pure noise
at ``sigma`` (80 as DMD2 and FastGen; the DMD re-implementation uses 79.5638, the second-largest
level of a 1000-point Karras grid). Before distillation this is "the teacher in one step"; after,
it is the distilled generator.

The one rule: :meth:`OneStepGenerator.generate` draws each image's noise from its own seed
(``pairs.pair_latents``, EDM's per-seed generators on the CPU), so an image depends on its seed and
class only, never on the batch it was drawn in or on the device. Images are returned as floats in
[-1, 1]; :func:`to_uint8` quantises them exactly as EDM's ``generate.py`` does before FID.

A generator folder (``save_generator`` / ``load_generator``) holds ``generator.json`` (format,
sigma, image shape, number of classes) and the network under ``network/``: ``config.json`` +
``model.safetensors`` of :func:`~generation_dmd.networks.save_edm` for EDM networks, or a diffusers
pipeline folder (``unet/`` + ``scheduler/``) for a wrapped DDPM.
"""
import json
import os
import os.path as osp

import torch
from mmengine.registry import MODELS

from common.io.atomic_folder import atomic_folder

from .pairs import pair_latents

GENERATOR_CONFIG = 'generator.json'
NETWORK_DIR = 'network'
FORMATS = ('edm', 'diffusers')


class GeneratorLoadError(RuntimeError):
    """A generator folder is missing, incomplete or inconsistent."""


def to_uint8(images):
    """EDM's quantisation: ``(x * 127.5 + 128).clip(0, 255)`` truncated to uint8."""
    return (images.to(torch.float32) * 127.5 + 128).clip(0, 255).to(torch.uint8)


def _network_facts(net):
    """(format, image_shape, num_classes) of a denoiser this module knows how to drive."""
    if hasattr(net, 'img_resolution') and hasattr(net, 'img_channels'):
        label_dim = int(getattr(net, 'label_dim', 0) or 0)
        shape = (int(net.img_channels), int(net.img_resolution), int(net.img_resolution))
        return 'edm', shape, (label_dim or None)
    unet = getattr(net, 'unet', None)
    if unet is not None and hasattr(net, 'log_sigmas'):
        size = unet.config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        num_classes = getattr(net, 'num_classes', None)
        return 'diffusers', (int(unet.config.in_channels), ) + tuple(int(s) for s in size), \
            (num_classes if num_classes and num_classes > 0 else None)
    raise TypeError(
        f'OneStepGenerator got a {type(net).__name__}: expected an EDM preconditioner '
        '(EDMPrecond, VPPrecond, VEPrecond, e.g. from load_edm) or a DiffusersDenoiser, whose '
        'image shape and classes it can read. Wrap other networks in one of these.')


@MODELS.register_module()
class OneStepGenerator(torch.nn.Module):
    """``G(z, labels) = net(sigma * z, sigma, labels)``.

    Args:
        net: the denoiser (a module, or a MODELS config such as ``dict(type='load_edm',
            folder=...)`` or ``dict(type='DiffusersDenoiser', pretrained=...)``).
        sigma (float): the noise level the generator denoises from.

    Attributes ``image_shape`` (C, H, W) and ``num_classes`` (None when unconditional) are read
    from the network. ``forward`` takes integer class ids (B,) or one-hot labels (B, K).
    """

    def __init__(self, net, sigma=80.0):
        super().__init__()
        if isinstance(net, dict):
            net = MODELS.build(net)
        sigma = float(sigma)
        if not sigma > 0 or sigma != sigma or sigma == float('inf'):
            raise ValueError(f'OneStepGenerator: sigma={sigma} must be a finite positive noise '
                             'level (80.0 as DMD2, or 79.5638 as the DMD re-implementation).')
        self.format, self.image_shape, self.num_classes = _network_facts(net)
        top = getattr(net, 'sigma_max', None)
        if self.format == 'diffusers' and top is not None and sigma > float(top) * (1 + 1e-6):
            raise ValueError(
                f'OneStepGenerator: sigma={sigma} is above the wrapped DDPM\'s largest trained '
                f'noise level {float(top):.6g}; use generator_sigma <= {float(top):.6g} for this '
                'teacher (its sigma_max).')
        self.net = net
        self.sigma = sigma

    def labels(self, class_ids, batch, device):
        """``class_ids`` (int, list, (B,) ints or (B, K) one-hot) as the network's labels."""
        if self.num_classes is None:
            if class_ids is not None:
                raise ValueError('OneStepGenerator: the network is unconditional; pass '
                                 'class_ids=None.')
            return None
        if class_ids is None:
            raise ValueError(
                f'OneStepGenerator: the network is class-conditional ({self.num_classes} '
                'classes); pass class ids (an int, a list or a tensor of ints).')
        ids = torch.as_tensor(class_ids, device=device)
        if ids.dim() == 2:
            return ids.to(torch.float32)
        ids = ids.reshape(-1).long()
        if ids.numel() == 1:
            ids = ids.expand(batch)
        if ids.numel() != batch or bool((ids < 0).any()) or bool((ids >= self.num_classes).any()):
            raise ValueError(
                f'OneStepGenerator: class ids {ids.tolist()[:8]} do not fit a batch of {batch} '
                f'images with {self.num_classes} classes: expected one id or {batch} ids in '
                f'[0, {self.num_classes}).')
        return torch.nn.functional.one_hot(ids, self.num_classes).to(torch.float32)

    def forward(self, noise, class_labels=None):
        labels = self.labels(class_labels, noise.shape[0], noise.device)
        return self.net(noise * self.sigma, self.sigma, labels)

    @torch.no_grad()
    def generate(self, seeds, class_ids=None, batch_size=256, device=None):
        """Images (N, C, H, W) in [-1, 1], float32 on ``device``, one per seed (eval mode)."""
        seeds = [int(s) for s in seeds]
        device = torch.device(device) if device is not None else \
            next(self.parameters()).device
        if class_ids is not None and not torch.is_tensor(class_ids) \
                and not isinstance(class_ids, (list, tuple)):
            class_ids = [int(class_ids)] * len(seeds)
        if class_ids is not None and len(class_ids) != len(seeds):
            raise ValueError(f'OneStepGenerator.generate: {len(class_ids)} class ids for '
                             f'{len(seeds)} seeds; give one id, or one per seed.')
        out = []
        was_training = self.training
        self.eval()  # dropout off: an image depends on its seed and class only
        try:
            for start in range(0, len(seeds), batch_size):
                chunk = seeds[start:start + batch_size]
                noise = pair_latents(chunk, self.image_shape, device=device)
                ids = None if class_ids is None else class_ids[start:start + batch_size]
                out.append(self(noise, ids).clamp(-1, 1).to(torch.float32))
        finally:
            self.train(was_training)
        if not out:
            return torch.zeros((0, ) + tuple(self.image_shape), device=device)
        return torch.cat(out)


def save_generator(generator, folder, metadata=None, overwrite=True):
    """Write ``generator`` as a generator folder (atomically); returns the folder's path."""
    from .networks import save_edm
    meta = {k: str(v) for k, v in (metadata or {}).items()}
    config = dict(format=generator.format, sigma=generator.sigma,
                  image_shape=list(generator.image_shape), num_classes=generator.num_classes,
                  metadata=meta)
    with atomic_folder(folder, overwrite=overwrite) as tmp:
        network = osp.join(tmp, NETWORK_DIR)
        if generator.format == 'edm':
            save_edm(generator.net, network, metadata=meta)
        else:
            from diffusers import DDPMScheduler
            net = generator.net
            net.unet.save_pretrained(osp.join(network, 'unet'), safe_serialization=True)
            scheduler_config = {k: v for k, v in net.scheduler_config.items()
                                if not k.startswith('_')}
            DDPMScheduler.from_config(scheduler_config).save_pretrained(
                osp.join(network, 'scheduler'))
            config['prediction_type'] = net.prediction_type
            config['timestep'] = net.timestep
        with open(osp.join(tmp, GENERATOR_CONFIG), 'w', encoding='utf-8') as f:
            json.dump(config, f, indent=2, sort_keys=True, allow_nan=False)
            f.write('\n')
    return osp.abspath(osp.expanduser(os.fspath(folder)))


def load_generator(folder, map_location='cpu'):
    """The :class:`OneStepGenerator` of a generator folder, in eval mode on ``map_location``."""
    folder = osp.expanduser(os.fspath(folder))
    config_path = osp.join(folder, GENERATOR_CONFIG)
    if not osp.isfile(config_path):
        raise GeneratorLoadError(
            f'{folder} is not a generator folder: {GENERATOR_CONFIG} is missing. Write one with '
            'tools/export_generator.py CONFIG CHECKPOINT OUT_DIR (or save_generator); a teacher '
            'network folder is sampled with tools/generate_samples.py --steps instead.')
    try:
        with open(config_path, encoding='utf-8') as f:
            config = json.load(f)
        fmt, sigma = config['format'], float(config['sigma'])
    except (ValueError, KeyError, TypeError) as err:
        raise GeneratorLoadError(
            f'{config_path} is not a valid generator config ({type(err).__name__}: {err}); '
            'expected JSON with format, sigma, image_shape and num_classes. Re-export the '
            'generator.') from None
    if fmt not in FORMATS:
        raise GeneratorLoadError(f'{config_path}: format={fmt!r}, expected one of {FORMATS}.')
    network = osp.join(folder, NETWORK_DIR)
    if fmt == 'edm':
        from .networks import load_edm
        net = load_edm(network, map_location=map_location)
    else:
        from .adapters import DiffusersDenoiser
        net = DiffusersDenoiser(pretrained=network,
                                prediction_type=config.get('prediction_type'),
                                timestep=config.get('timestep', 'interpolate'))
    generator = OneStepGenerator(net, sigma=sigma)
    expected = (tuple(config.get('image_shape', generator.image_shape)),
                config.get('num_classes', generator.num_classes))
    if expected != (tuple(generator.image_shape), generator.num_classes):
        raise GeneratorLoadError(
            f'{config_path} says image shape {expected[0]} and {expected[1]} classes but the '
            f'network under {network} has {tuple(generator.image_shape)} and '
            f'{generator.num_classes}; the folder was edited by hand or mixed from two exports. '
            'Re-export it.')
    return generator.to(map_location).eval()


__all__ = ['OneStepGenerator', 'GeneratorLoadError', 'save_generator', 'load_generator',
           'to_uint8', 'GENERATOR_CONFIG']
