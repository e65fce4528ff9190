"""Pixel features of a pixel-space DDPM, as ddpm-segmentation builds them, without the memory.

ddpm-segmentation noises each image with one fixed noise tensor at t in ``steps``, records the
guided-diffusion ``output_blocks`` in ``blocks``, upsamples every map bilinearly to the image size
and concatenates them: an 8448-d feature per pixel of a 256-px image (2.2 GB per image in
float32). :class:`PixelFeatureExtractor` computes the same values but keeps the maps at their
native resolution (:meth:`~PixelFeatureExtractor.native`, ~50 MB per image in float16) and
upsamples only what is asked for: the pixels a training batch samples (:func:`sample_pixels`) or
a few rows of an image at inference (:func:`upsampled_chunks`).

The one rule: the upsampled feature of pixel ``(row, col)`` is read with ``grid_sample`` at the
pixel's centre (``(2 * col + 1) / S - 1``, ``align_corners=False``, border padding), which is
``F.interpolate(mode='bilinear', align_corners=False)`` of the reference to float32 round-off;
the full ``[D, S, S]`` map is never built.

Order of the maps and channels: for t in steps: for b in blocks (the reference's). The shared
noise (``share_noise=True``, the reference's default) is ONE ``randn(1, 3, S, S)`` from a CPU
generator seeded with ``seed``, reused for every image and timestep; it is the teacher's own
seeded noise (``DiffusionTeacher(seed=seed, ensemble=1)``). The reference draws it on the GPU
when it runs there, so its values differ from a CPU draw of the same seed; the rule is the same.
The reference also runs the ADM in float16 (``--use_fp16 True``); set the teacher's
``dtype='float16'`` to do the same on a GPU.
"""
import copy

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS

from common.teachers.diffusion_teacher import DiffusionTeacher
from common.teachers.loading import DiffusionComponents

from .adm_blocks import (DEFAULT_BLOCKS, DEFAULT_STEPS, adm_output_block_path,
                         adm_output_block_shape, num_output_blocks)

UPSAMPLE_MODES = ('bilinear', )
# DiffusionTeacher settings the extractor decides itself; a teacher config may not set them.
OWNED_TEACHER_KEYS = ('layers', 'timesteps', 'seed', 'noise', 'ensemble')
# Bump when the way native maps are computed or stored changes.
SETTINGS_VERSION = 1


class PixelFeatureError(ValueError):
    """Bad input to the pixel-feature extractor, store or sampler."""


def _grid(rows, cols, size):
    """``[1, 1, P, 2]`` grid (x = column, y = row) at the centres of pixels ``(rows, cols)``."""
    x = (2.0 * cols.to(torch.float64) + 1.0) / size - 1.0
    y = (2.0 * rows.to(torch.float64) + 1.0) / size - 1.0
    return torch.stack([x, y], dim=-1).view(1, 1, -1, 2)


def _check_native(native_list):
    if not isinstance(native_list, (list, tuple)) or not native_list or any(
            not torch.is_tensor(m) or m.dim() != 4 for m in native_list):
        shapes = [tuple(m.shape) if torch.is_tensor(m) else type(m).__name__
                  for m in (native_list if isinstance(native_list, (list, tuple)) else [native_list])]
        raise PixelFeatureError(
            f'expected the native maps as a non-empty list of [B, C, h, w] tensors (what '
            f'PixelFeatureExtractor.native or NativeFeatureStore.get returns), got {shapes}. '
            f'Pass the whole list, with a batch dimension (use m[None] for one image\'s [C, h, w]).')
    batch = {m.shape[0] for m in native_list}
    if len(batch) != 1:
        raise PixelFeatureError(
            f'the native maps have different batch sizes {sorted(batch)}; expected every map of '
            f'the list to hold the same images. Pass the maps of one extraction together.')


def _check_pixels(rows, cols, size):
    rows = torch.as_tensor(rows).long().view(-1)
    cols = torch.as_tensor(cols).long().view(-1)
    if rows.shape != cols.shape:
        raise PixelFeatureError(
            f'rows ({rows.numel()}) and cols ({cols.numel()}) must give one row and one column '
            f'per sampled pixel; pass index tensors of the same length.')
    for name, idx in (('rows', rows), ('cols', cols)):
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= size):
            raise PixelFeatureError(
                f'{name} hold pixel indices outside 0..{size - 1} (min {int(idx.min())}, max '
                f'{int(idx.max())}) of the {size}x{size} image; sample pixels of the image.')
    return rows, cols


def sample_pixels(native_list, rows, cols, image_size, image_index=0):
    """``[P, D]`` float32: the bilinearly upsampled (to ``image_size``) features of pixels
    ``(rows[p], cols[p])`` of image ``image_index`` (an int, or one index per pixel).

    Equals ``torch.cat([F.interpolate(m, size=(S, S), mode='bilinear', align_corners=False)
    for m in native_list], 1)[image_index, :, rows, cols]`` to float32 round-off, without building
    the upsampled maps; only one image's maps are converted to float32 at a time.
    """
    _check_native(native_list)
    size = int(image_size)
    rows, cols = _check_pixels(rows, cols, size)
    n_images = native_list[0].shape[0]
    dim = sum(m.shape[1] for m in native_list)
    images = torch.as_tensor(image_index).long().view(-1)
    if images.numel() == 1:
        images = images.expand(rows.numel())
    if images.numel() != rows.numel():
        raise PixelFeatureError(
            f'image_index gives {images.numel()} image indices for {rows.numel()} pixels; pass one '
            f'int for all pixels or one index per pixel.')
    if images.numel() and (int(images.min()) < 0 or int(images.max()) >= n_images):
        raise PixelFeatureError(
            f'image_index {int(images.max())} is outside the {n_images} images of the native maps '
            f'(0..{n_images - 1}).')
    out = torch.empty(rows.numel(), dim, dtype=torch.float32)
    for b in images.unique().tolist():
        sel = (images == b).nonzero().view(-1)
        grid = _grid(rows[sel], cols[sel], size)
        start = 0
        for m in native_list:
            src = m[b:b + 1].to(torch.float32)
            vals = F.grid_sample(src, grid.to(src.device, torch.float32), mode='bilinear',
                                 padding_mode='border', align_corners=False)  # [1, C, 1, P]
            out[sel, start:start + m.shape[1]] = vals[0, :, 0].t().cpu()
            start += m.shape[1]
    return out


def upsampled_chunks(native_list, image_size, chunk_rows=16, image_index=0):
    """Yield image ``image_index``'s full upsampled features ``[D, r, S]`` float32, ``chunk_rows``
    rows at a time (top to bottom; the last chunk may be shorter), for dense inference."""
    _check_native(native_list)
    size = int(image_size)
    if int(chunk_rows) < 1:
        raise PixelFeatureError(f'chunk_rows={chunk_rows} must be at least 1.')
    cols = torch.arange(size)
    for r0 in range(0, size, int(chunk_rows)):
        r = min(int(chunk_rows), size - r0)
        rows = torch.arange(r0, r0 + r).repeat_interleave(size)
        feats = sample_pixels(native_list, rows, cols.repeat(r), size, image_index)
        yield feats.t().reshape(-1, r, size)


def _as_components(teacher):
    """The teacher's components (public pieces only) to build our own teacher around."""
    return DiffusionComponents(unet=teacher.unet, noise_scheduler=teacher.noise_scheduler,
                               vae=teacher.vae, source=str(teacher.pretrained))


@MODELS.register_module()
class PixelFeatureExtractor(torch.nn.Module):
    """ddpm-segmentation's pixel features of a converted guided-diffusion ADM, memory-safe.

    Args:
        teacher (dict | DiffusionTeacher): a ``DiffusionTeacher`` config (``type`` optional;
            ``pretrained`` = a folder written by ``tools/convert/guided_diffusion_to_diffusers.py``;
            ``dtype``, ``max_batch_size``, ``noise_schedule`` as usual) or a built teacher, whose
            UNet and scheduler are reused. ``layers``, ``timesteps``, ``seed``, ``noise`` and
            ``ensemble`` are set here from the arguments below.
        blocks (tuple[int]): guided-diffusion ``output_blocks`` indices.
        steps (tuple[int]): diffusion timesteps.
        share_noise (bool): one fixed noise for every image and timestep (the reference's
            default); False draws fresh noise per image and timestep (not reproducible).
        seed (int): the seed of the shared noise.
        upsample (str): ``'bilinear'`` (the reference's ``upsample_mode``).
        image_size (int): the side S of the square input images and of the upsampled features.
    """

    def __init__(self, teacher, blocks=DEFAULT_BLOCKS, steps=DEFAULT_STEPS, share_noise=True,
                 seed=0, upsample='bilinear', image_size=256):
        super().__init__()
        if upsample not in UPSAMPLE_MODES:
            raise PixelFeatureError(
                f'PixelFeatureExtractor upsample={upsample!r} is not one of {UPSAMPLE_MODES}; '
                f"ddpm-segmentation's upsample_mode is 'bilinear'.")
        self.blocks = tuple(int(b) for b in blocks)
        self.steps = tuple(int(t) for t in steps)
        if not self.blocks or not self.steps:
            raise PixelFeatureError(
                f'PixelFeatureExtractor needs at least one block and one step, got '
                f'blocks={list(self.blocks)} steps={list(self.steps)}; e.g. blocks='
                f'{list(DEFAULT_BLOCKS)}, steps={list(DEFAULT_STEPS)}.')
        self.share_noise = bool(share_noise)
        self.seed = int(seed)
        self.upsample = upsample
        self.image_size = int(image_size)
        owned = dict(timesteps=list(self.steps), noise='forward', ensemble=1,
                     seed=self.seed if self.share_noise else None)
        if isinstance(teacher, DiffusionTeacher):
            unet = teacher.unet
            kwargs = dict(pretrained=_as_components(teacher), dtype=teacher.dtype_name,
                          max_batch_size=teacher.max_batch_size, class_label=teacher.class_label)
        elif isinstance(teacher, dict):
            kwargs = copy.deepcopy(dict(teacher))
            kind = kwargs.pop('type', 'DiffusionTeacher')
            if kind not in ('DiffusionTeacher', DiffusionTeacher):
                raise PixelFeatureError(
                    f'PixelFeatureExtractor teacher type={kind!r}: expected a DiffusionTeacher '
                    f'config (a pixel-space DDPM, e.g. a converted guided-diffusion ADM).')
            clash = [k for k in OWNED_TEACHER_KEYS if k in kwargs]
            if clash:
                raise PixelFeatureError(
                    f'PixelFeatureExtractor teacher config sets {clash}, which the extractor '
                    f'sets itself (layers from blocks, timesteps from steps, seed and noise from '
                    f'seed/share_noise, ensemble=1). Remove them from the teacher config and use '
                    f'blocks=..., steps=..., seed=..., share_noise=... of the extractor.')
            if 'pretrained' not in kwargs:
                raise PixelFeatureError(
                    'PixelFeatureExtractor teacher config has no pretrained; expected the folder '
                    'of a converted guided-diffusion ADM (tools/convert/'
                    'guided_diffusion_to_diffusers.py OUT).')
            unet = None
        else:
            raise PixelFeatureError(
                f'PixelFeatureExtractor teacher must be a DiffusionTeacher config dict or a '
                f'DiffusionTeacher, got a {type(teacher).__name__}.')
        if unet is None:  # build once with a placeholder layer to learn the UNet's layout
            probe = DiffusionTeacher(layers=['conv_in'], **owned, **kwargs)
            kwargs['pretrained'] = _as_components(probe)
            unet = probe.unet
        if type(unet).__name__ != 'UNet2DModel' or kwargs['pretrained'].vae is not None:
            raise PixelFeatureError(
                f'PixelFeatureExtractor needs a pixel-space UNet2DModel (a converted '
                f'guided-diffusion ADM), got a {type(unet).__name__}.')
        total = num_output_blocks(unet.config)
        bad = [b for b in self.blocks if not 0 <= b < total]
        if bad:
            raise PixelFeatureError(
                f'PixelFeatureExtractor blocks {bad} are outside the {total} output blocks of '
                f'this UNet (0..{total - 1}); ddpm-segmentation uses {list(DEFAULT_BLOCKS)} on '
                f'the 256-px ADM (13+ output blocks). Choose blocks of this model.')
        self.layers = [adm_output_block_path(unet.config, b) for b in self.blocks]
        self.channels = [adm_output_block_shape(unet.config, b, self.image_size)[0]
                         for b in self.blocks]
        self.native_sides = [adm_output_block_shape(unet.config, b, self.image_size)[1]
                             for b in self.blocks]
        self.teacher = DiffusionTeacher(layers=list(dict.fromkeys(self.layers)), **owned,
                                        **kwargs)

    # ------------------------------------------------------------------ description
    @property
    def dim(self):
        """Channels of one pixel's feature: sum of the blocks' channels x number of steps."""
        return sum(self.channels) * len(self.steps)

    @property
    def native_shapes(self):
        """``[(C, h, w)]`` of the native maps, in :meth:`native`'s order."""
        return [(c, s, s) for _ in self.steps for c, s in zip(self.channels, self.native_sides)]

    def settings(self):
        """Everything that changes a native map (for a store's manifest); JSON-able."""
        teacher = dict(self.teacher.cache_settings())
        teacher.pop('pretrained', None)  # where the weights lie does not matter, their digest does
        teacher.pop('seed', None)  # the extractor's own seed/share_noise below say it
        return dict(version=SETTINGS_VERSION, blocks=list(self.blocks), steps=list(self.steps),
                    layers=list(self.layers), share_noise=self.share_noise, seed=self.seed,
                    upsample=self.upsample, image_size=self.image_size,
                    native_shapes=[list(s) for s in self.native_shapes], dim=self.dim,
                    teacher=teacher)

    # ------------------------------------------------------------------ features
    def _check_images(self, images):
        s = self.image_size
        if not torch.is_tensor(images) or images.dim() != 4 or images.shape[1] != 3 \
                or tuple(images.shape[-2:]) != (s, s):
            shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
            raise PixelFeatureError(
                f'PixelFeatureExtractor expected images [B, 3, {s}, {s}] in [-1, 1] '
                f'(image_size={s}), got {shape}. Resize the images to {s}x{s} (only square '
                f'images, as ddpm-segmentation) or set image_size.')

    @torch.no_grad()
    def native(self, images):
        """``[B, C_i, h_i, w_i]`` float32 maps at native resolution, for t in steps: for b in
        blocks. ``images``: ``[B, 3, S, S]`` in [-1, 1]."""
        self._check_images(images)
        feats = self.teacher.extract(images)
        return [feats[f'{layer}@{t}'] for t in self.steps for layer in self.layers]

    def forward(self, images):
        return self.native(images)

    def sample(self, native_list, rows, cols, image_index=0):
        """``[P, D]`` upsampled features of pixels ``(rows, cols)`` (see :func:`sample_pixels`)."""
        return sample_pixels(native_list, rows, cols, self.image_size, image_index)

    def upsampled_chunks(self, native_list, chunk_rows=16, image_index=0):
        """Yield ``[D, r, S]`` full-image features a few rows at a time (see
        :func:`upsampled_chunks`)."""
        return upsampled_chunks(native_list, self.image_size, chunk_rows, image_index)


@MODELS.register_module()
class RawPixelFeatures(torch.nn.Module):
    """The raw-pixel baseline with :class:`PixelFeatureExtractor`'s interface: each pixel's
    feature is its own RGB value in [-1, 1] (``dim`` 3, one native map at full resolution), so
    the same store, sampler, ensemble and segmentor measure what the pixels alone give."""

    def __init__(self, image_size=256):
        super().__init__()
        self.image_size = int(image_size)
        self.steps, self.blocks, self.layers = (), (), ['image']

    @property
    def dim(self):
        return 3

    @property
    def native_shapes(self):
        return [(3, self.image_size, self.image_size)]

    def settings(self):
        return dict(version=SETTINGS_VERSION, kind='raw_pixels', image_size=self.image_size,
                    native_shapes=[list(s) for s in self.native_shapes], dim=self.dim)

    _check_images = PixelFeatureExtractor._check_images

    @torch.no_grad()
    def native(self, images):
        """``[images]``: ``[B, 3, S, S]`` in [-1, 1], float32."""
        self._check_images(images)
        return [images.float()]

    forward = native
    sample = PixelFeatureExtractor.sample
    upsampled_chunks = PixelFeatureExtractor.upsampled_chunks
