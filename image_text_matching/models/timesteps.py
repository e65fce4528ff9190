"""The timestep grid and the common random noise of image-text scoring (DSD, Diffusion-ITM).

The one rule: noise is a pure function of ``(seed, stream, index, shape)``. The noise added at
timestep ``t`` is drawn from a ``torch.Generator`` keyed by ``(seed, t)``, on the CPU in float32,
and shared by every candidate scored with that seed; so a candidate's score never depends on how
many other candidates are scored with it, on the batch layout or on the device. This replaces
the reference's cached ``~/diffusers/noise_samples.pkl`` (``randn(1000, 4, 64, 64)``, one row per
train timestep, created on first use) by numbers anyone can regenerate from the seed.

The grid is the reference's: ``range(start, stop, span // num_timesteps)`` (``span`` = 1000 train
timesteps). For the default 30 steps the stride is 33 and the grid is ``10, 43, 76, ..., 967``
(30 timesteps); for 10 steps ``10, 110, ..., 910``; for 40 steps ``10, 35, ..., 985``. The integer
stride makes the grid shorter than ``num_timesteps`` for some counts (200 steps: stride 5, 196
timesteps; 50 steps: stride 20, 49 timesteps), exactly as the reference.
"""
import hashlib

import torch

# Streams keep the forward noise and the VAE posterior draws of one seed apart.
STREAMS = dict(forward=0, latent=1)


def timestep_grid(num_timesteps=30, start=10, stop=990, span=1000):
    """The reference's evenly spaced timesteps: ``list(range(start, stop, span // num_timesteps))``.

    Args:
        num_timesteps (int): requested number of timesteps (the reference's
            ``sampling_time_steps``); the stride is ``span // num_timesteps``.
        start (int): first timestep (10 in DSD and Diffusion-ITM).
        stop (int): exclusive upper end (990).
        span (int): the number of train timesteps the stride divides (1000).
    """
    num_timesteps, start, stop, span = int(num_timesteps), int(start), int(stop), int(span)
    if num_timesteps < 1 or not 0 <= start < stop or num_timesteps > span:
        raise ValueError(
            f'timestep_grid(num_timesteps={num_timesteps}, start={start}, stop={stop}, '
            f'span={span}) is empty: it needs 1 <= num_timesteps <= span and 0 <= start < stop, '
            f'e.g. timestep_grid(30, 10, 990) (the reference grid 10, 43, ..., 967).')
    return list(range(start, stop, span // num_timesteps))


def _generator(seed, stream, index):
    """A CPU generator whose state depends only on (seed, stream, index)."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f'noise seed must be a non-negative int, got {seed!r}.')
    digest = hashlib.sha256(f'dsd-noise:{seed}:{stream}:{int(index)}'.encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], 'little') >> 1)


def seeded_normal(seed, stream, index, shape):
    """Standard normal float32 CPU tensor of ``shape`` keyed by ``(seed, stream, index)``; with
    ``seed=None`` a fresh draw from torch's global generator."""
    shape = tuple(int(s) for s in shape)
    if seed is None:
        return torch.randn(shape)
    return torch.randn(shape, generator=_generator(seed, STREAMS[stream], index))


def shared_noise(seed, timestep_index, shape):
    """The forward noise ``eps`` for timestep ``timestep_index`` (the timestep itself, in
    ``[0, num_train_timesteps)``, as the reference's per-timestep cache rows): a float32 CPU
    tensor of ``shape`` (one latent, no batch axis) that depends only on ``(seed,
    timestep_index, shape)``. ``seed=None`` draws fresh noise."""
    return seeded_normal(seed, 'forward', timestep_index, shape)


def latent_noise(seed, shape):
    """The standard normal draw of the VAE posterior sample (``latent='sample'``): shared by
    every image of that latent shape, from its own stream of ``seed``."""
    return seeded_normal(seed, 'latent', 0, shape)
