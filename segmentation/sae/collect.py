"""Training tokens for sparse autoencoders: one UNet block's features of an unlabeled image folder.

Each image is read as ddpm-segmentation reads it (square only, resized to ``size``, scaled to
[-1, 1]), noised to one timestep ``t`` with the SHARED fixed noise of ddpm-segmentation (one
``randn(1, 3, S, S)`` drawn from ``torch.Generator().manual_seed(seed)``, reused for every image:
the ``DiffusionTeacher``'s ``seed``), and the output of one decoder block (ADM
``output_blocks[6]``: 512 x 32 x 32 on a 256-px model, i.e. 1024 tokens per image) is stored at
its native resolution as ``[C, h, w]`` in the shards of :mod:`common.io.feature_shards`
(resumable, checksummed, one folder per DDP rank).

The one rule: a shard holds ``[C, h, w]`` maps; SAE code reads TOKENS, ``[h * w, C]`` in row-major
(y, x) order (:func:`to_tokens` / :func:`from_tokens`, :meth:`SAEFeatureShards.tokens`), and every
tool maps a latent's tokens back to a map with the same order.
"""
import os.path as osp

import numpy as np
import torch

from common.io import feature_shards as fs

TOOL = 'tools/collect_sae_features.py'


class SAEFeatureError(ValueError):
    """An SAE feature folder, image or setting is wrong; one paragraph with the fix."""


KIND = fs.ShardKind(error=SAEFeatureError, noun='SAE features', adjective='SAE-feature',
                    tool=TOOL, images_fix='pass --images DIR (or set sae_features.image_root in '
                    'the config)', extensions_fix='set sae_features.extensions to the files\' '
                    'extensions')


# ------------------------------------------------------------------------------------ tokens
def to_tokens(features):
    """``[C, h, w]`` -> ``[h * w, C]`` (row-major: token ``y * w + x``); ``[B, C, h, w]`` ->
    ``[B * h * w, C]``."""
    if features.dim() == 3:
        return features.flatten(1).t()
    if features.dim() == 4:
        return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])
    raise SAEFeatureError(
        f'to_tokens: expected block features [C, h, w] or [B, C, h, w], got shape '
        f'{tuple(features.shape)}. Pass the output of one UNet block.')


def from_tokens(tokens, h, w):
    """Inverse of :func:`to_tokens`: ``[h * w, D]`` -> ``[D, h, w]``; ``[B * h * w, D]`` ->
    ``[B, D, h, w]``."""
    if tokens.dim() != 2 or tokens.shape[0] % (h * w):
        raise SAEFeatureError(
            f'from_tokens: expected tokens [B * {h} * {w}, D], got shape {tuple(tokens.shape)}. '
            f'Pass whole images\' tokens in to_tokens order.')
    b = tokens.shape[0] // (h * w)
    maps = tokens.reshape(b, h, w, tokens.shape[1]).permute(0, 3, 1, 2)
    return maps[0] if b == 1 else maps


# ------------------------------------------------------------------------------------ images
def load_square_image(path, size):
    """The image at ``path`` as ddpm-segmentation feeds it: float ``[3, size, size]`` in [-1, 1]
    (PIL bilinear resize, as torchvision's ``Resize`` on a PIL image; then ``2 x - 1``)."""
    from PIL import Image
    if not osp.isfile(path):
        raise SAEFeatureError(f'{path}: expected an image file, but no such file exists. Check '
                              f'the image folder.')
    with Image.open(path) as im:
        im = im.convert('RGB')
        if im.width != im.height:
            raise SAEFeatureError(
                f'{path}: expected a square image (ddpm-segmentation\'s DDPM features take '
                f'{size}x{size} inputs), got {im.width}x{im.height}. Crop it to a square first '
                f'or leave it out of the folder.')
        if im.width != size:
            im = im.resize((size, size), Image.BILINEAR)
        array = np.asarray(im, dtype=np.float32) / 255.0
    return torch.from_numpy(array.transpose(2, 0, 1).copy()) * 2 - 1


def check_teacher(teacher, one_timestep=True):
    """The single ``(layer, timestep)`` of ``teacher`` and that it uses shared fixed noise
    (``one_timestep=False``: any number of timesteps; returns the first)."""
    if len(teacher.layers) != 1 or (one_timestep and len(teacher.timesteps) != 1):
        raise SAEFeatureError(
            f'SAE features come from ONE block at ONE timestep, but the teacher has layers='
            f'{teacher.layers} and timesteps={teacher.timesteps}. Give the teacher config one '
            f'layer (e.g. the module path of ADM output_blocks[6]) and one timestep.')
    if teacher.noise == 'forward' and teacher.seed is None:
        raise SAEFeatureError(
            'The teacher draws new noise on every call (seed=None), but SAE features use '
            'ddpm-segmentation\'s shared fixed noise: set the teacher\'s seed (e.g. seed=0).')
    return teacher.layers[0], teacher.timesteps[0]


def adm_block_layer(pretrained, block):
    """The module path of guided-diffusion's ``output_blocks[block]`` in the converted
    ``UNet2DModel`` of the pipeline (or bare UNet) folder ``pretrained``
    (``segmentation.pixel_features.adm_blocks.adm_output_block_path``)."""
    import json
    from segmentation.pixel_features.adm_blocks import adm_output_block_path
    folder = osp.expanduser(str(pretrained))
    candidates = [osp.join(folder, 'unet', 'config.json'), osp.join(folder, 'config.json')]
    found = [c for c in candidates if osp.isfile(c)]
    if not found:
        raise SAEFeatureError(
            f'{folder}: expected a converted ADM pipeline folder (unet/config.json) or a bare '
            f'UNet2DModel folder (config.json) to map output_blocks[{block}] to a module path, '
            f'found neither. Convert the guided-diffusion checkpoint with '
            f'tools/convert/guided_diffusion_to_diffusers.py, or give teacher.layers instead of '
            f'sae_features.block.')
    with open(found[0]) as f:
        return adm_output_block_path(json.load(f), int(block))


def block_features(teacher, images):
    """``[B, C, h, w]`` float32: ``teacher``'s one block at its one timestep for ``images`` in
    [-1, 1] ``[B, 3, S, S]``."""
    layer, t = check_teacher(teacher)
    return teacher(images.to(teacher.device))[f'{layer}@{t}'].float().cpu()


def make_compute(teacher, image_root, size):
    """``compute(keys) -> (features [B, C, h, w], None)`` for :func:`write_shards`."""
    check_teacher(teacher)

    @torch.no_grad()
    def compute(keys):
        images = torch.stack([load_square_image(osp.join(image_root, k), size) for k in keys])
        return block_features(teacher, images), None

    return compute


def feature_settings(teacher_cfg, layer, timestep, size, seed):
    """What the stored features depend on (compared on every re-run into the same folder)."""
    return dict(teacher=fs.config_digest(teacher_cfg), layer=layer, timestep=int(timestep),
                size=int(size), seed=seed, token_order='row-major [h*w, C]')


def collect_sae_features(teacher, image_root, out, size=256, teacher_cfg=None, keys=None,
                         rank=0, world_size=1, shard_size=256, dtype='float16', batch_size=8,
                         barrier=None, show_progress=True, extensions=fs.IMAGE_EXTENSIONS,
                         num_images=None, seed=0):
    """Write ``teacher``'s block features of every image under ``image_root`` into ``out``.

    Args:
        teacher (DiffusionTeacher): one layer, one timestep, a ``seed`` (shared fixed noise).
        image_root (str): the unlabeled images (square; searched recursively).
        out (str): the shard folder (see :mod:`common.io.feature_shards`); a re-run continues.
        size (int): the model's input size (ADM: 256).
        teacher_cfg (dict | None): the teacher's config, recorded as a digest (a re-run with
            another teacher is refused).
        keys (list[str] | None): the image keys; default: every image (or a seeded subset of
            ``num_images``, chosen with ``seed``).
        rank, world_size, barrier: DDP (rank r takes images i % world_size == r).
    Returns:
        the shard writer (``written``, ``done``).
    """
    layer, t = check_teacher(teacher)
    if keys is None:
        keys = fs.list_images(image_root, extensions, num_images, seed, kind=KIND)
    settings = feature_settings(teacher_cfg, layer, t, size, teacher.seed)
    return fs.write_shards(
        out, keys, make_compute(teacher, image_root, size), settings, rank=rank,
        world_size=world_size, shard_size=shard_size, dtype=dtype, batch_size=batch_size,
        barrier=barrier, info=dict(image_root=osp.abspath(osp.expanduser(image_root))),
        show_progress=show_progress, kind=KIND)


# ------------------------------------------------------------------------------------ reader
class SAEFeatureShards(fs.FeatureShards):
    """A folder written by :func:`collect_sae_features`, read as SAE tokens.

    ``get(key)`` -> ``[C, h, w]``; ``tokens(key)`` -> ``[h * w, C]``; ``iter_batches(batch)``
    yields ``[n * h * w, C]`` token batches of ``n`` whole images (keys in sorted order, or
    shuffled with ``seed``); ``token_matrix()`` stacks every token (small sets only).
    """

    kind = KIND

    def tokens(self, key):
        return to_tokens(self.get(key))

    def iter_batches(self, images_per_batch=8, seed=None):
        keys = self.keys()
        if seed is not None:
            order = torch.randperm(len(keys), generator=torch.Generator().manual_seed(seed))
            keys = [keys[i] for i in order.tolist()]
        for start in range(0, len(keys), images_per_batch):
            yield torch.cat([self.tokens(k) for k in keys[start:start + images_per_batch]])

    def token_matrix(self):
        return torch.cat([self.tokens(k) for k in self.keys()])
