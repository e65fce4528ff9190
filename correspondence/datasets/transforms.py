"""Data pipeline of a correspondence pair: load both images, resize each into a frame, pack.

The one rule: keypoints and boxes are never changed by the pipeline. They stay in original pixels
(the data contract (``correspondence/README.md``)); :class:`ResizePair` only records, per image, the
:class:`~correspondence.geometry.FrameTransform` it applied (``src_frame``/``trg_frame`` as plain
``dict(scale, offset, size)``), and the model maps keypoints into and out of the frames with it.
So the metric always sees original pixels, whatever frame the model worked in.

A test pipeline::

    [dict(type='LoadImagePair'),
     dict(type='ResizePair', frame='padded', size=840),
     dict(type='PackPair')]

with ``collate_fn=dict(type='pair_collate')`` in the data loader. Everything is registered in
mmengine's root ``TRANSFORMS`` (and ``FUNCTIONS`` for the collate function).
"""
import numpy as np
import torch
from mmengine.registry import FUNCTIONS, TRANSFORMS

from ..geometry import FRAMES, frame_transform
from .base import CorrespondenceDataError

SIDES = ('src', 'trg')
RESAMPLING = ('nearest', 'bilinear', 'bicubic', 'lanczos')


class PairTransform:
    """A pipeline step: ``results = step(results)`` (mmengine's ``Compose`` calls it). Plain
    classes, no mmcv: the subtree only needs PIL and torch."""

    def __call__(self, results):
        return self.transform(results)

    def transform(self, results):
        raise NotImplementedError

    def __repr__(self):
        return f'{type(self).__name__}()'


def load_rgb(path):
    """The image at ``path`` as an RGB ``uint8`` array ``[H, W, 3]`` (PIL; grey/RGBA/CMYK are
    converted). A missing or unreadable file is a :class:`CorrespondenceDataError` naming it."""
    from PIL import Image
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert('RGB'), dtype=np.uint8).copy()
    except FileNotFoundError as exc:
        raise CorrespondenceDataError(
            f'{path}: expected an image of a correspondence pair, but no such file exists. Check '
            'that the dataset\'s data_root points at the extracted release and that its images '
            'folder is complete (re-extract the archive if files are missing).') from exc
    except (OSError, ValueError, SyntaxError) as exc:  # PIL: UnidentifiedImageError, truncated
        raise CorrespondenceDataError(
            f'{path}: expected a readable image of a correspondence pair, but PIL cannot decode '
            f'it ({exc}). The file is probably truncated or corrupt: re-extract it from the '
            'release archive.') from exc


@TRANSFORMS.register_module()
class LoadImagePair(PairTransform):
    """Read ``src_img_path`` and ``trg_img_path`` into ``src_img`` / ``trg_img`` (RGB ``uint8``
    ``[H, W, 3]``), with ``src_img_shape`` / ``trg_img_shape`` = ``(H, W)``."""

    def transform(self, results):
        for side in SIDES:
            key = f'{side}_img_path'
            if key not in results:
                raise KeyError(f'LoadImagePair needs {key!r} in the pair dict (a dataset of '
                               'correspondence/datasets gives it); got keys '
                               f'{sorted(results)}.')
            image = load_rgb(results[key])
            results[f'{side}_img'] = image
            results[f'{side}_img_shape'] = image.shape[:2]
        return results


def _pil_resample(name):
    from PIL import Image
    return dict(nearest=Image.NEAREST, bilinear=Image.BILINEAR, bicubic=Image.BICUBIC,
                lanczos=Image.LANCZOS)[name]


def frame_dict(transform):
    """A :class:`~correspondence.geometry.FrameTransform` as a plain, collatable dict."""
    return dict(scale=tuple(float(v) for v in transform.scale),
                offset=tuple(float(v) for v in transform.offset),
                size=tuple(int(v) for v in transform.size))


def resize_to_frame(image, transform, frame, resample='bilinear', pad_value=0):
    """``image [H, W, 3] uint8`` drawn into the frame of ``transform`` (see
    :func:`~correspondence.geometry.frame_transform`): stretched to the frame's size, or resized
    by the common scale and pasted at the frame's offset on a ``pad_value`` canvas."""
    from PIL import Image
    fw, fh = transform.size
    if frame == 'original':
        return image
    pil = Image.fromarray(image)
    if frame == 'stretched':
        return np.asarray(pil.resize((fw, fh), _pil_resample(resample)), dtype=np.uint8)
    h, w = image.shape[:2]
    # the resized size exactly as geometry.frame_transform computes it for its offsets
    rw, rh = round(fw * w / max(w, h)), round(fh * h / max(w, h))
    ox, oy = (int(v) for v in transform.offset)
    canvas = np.full((fh, fw, 3), pad_value, dtype=np.uint8)
    canvas[oy:oy + rh, ox:ox + rw] = np.asarray(pil.resize((rw, rh), _pil_resample(resample)))
    return canvas


@TRANSFORMS.register_module()
class ResizePair(PairTransform):
    """Resize each image of the pair, independently, into a frame; record the frame.

    Args:
        frame: ``'original'`` (no resize), ``'stretched'`` (per-axis resize to ``size``) or
            ``'padded'`` (aspect-preserving resize to ``size`` and centred zero padding), as
            :func:`correspondence.geometry.frame_transform` defines them.
        size: an int ``S`` (``S x S``) or ``(W, H)``; ``'padded'`` needs a square.
        resample: PIL filter, ``'bilinear'`` (default), ``'bicubic'``, ``'lanczos'``,
            ``'nearest'``.
        pad_value: the grey level of the padding (``'padded'``).

    Writes ``src_frame`` / ``trg_frame`` = ``dict(scale=(sx, sy), offset=(ox, oy), size=(W', H'))``
    (``frame = original * scale + offset``) computed from the loaded image's own size, and
    replaces ``src_img`` / ``trg_img``. Keypoints and boxes are left in original pixels.
    """

    def __init__(self, frame='original', size=None, resample='bilinear', pad_value=0):
        if frame not in FRAMES:
            raise ValueError(f'ResizePair: frame={frame!r} is not one of {FRAMES}.')
        if frame != 'original':
            if size is None:
                raise ValueError(f'ResizePair: frame={frame!r} needs size=S or size=(W, H).')
            size = int(size) if isinstance(size, (int, float)) else tuple(int(v) for v in size)
        if resample not in RESAMPLING:
            raise ValueError(f'ResizePair: resample={resample!r} is not one of {RESAMPLING}.')
        self.frame = frame
        self.size = size
        self.resample = resample
        self.pad_value = pad_value
        if frame == 'padded':  # fail at build time, not on the first image
            frame_transform((1, 1), frame, size)

    def transform(self, results):
        for side in SIDES:
            image = results.get(f'{side}_img')
            if image is None:
                raise KeyError(f'ResizePair needs {side}_img; put LoadImagePair before it.')
            h, w = image.shape[:2]
            transform = frame_transform((w, h), self.frame, self.size)
            results[f'{side}_img'] = resize_to_frame(image, transform, self.frame,
                                                     self.resample, self.pad_value)
            results[f'{side}_frame'] = frame_dict(transform)
        return results

    def __repr__(self):
        return (f'{type(self).__name__}(frame={self.frame!r}, size={self.size!r}, '
                f'resample={self.resample!r})')


@TRANSFORMS.register_module()
class PackPair(PairTransform):
    """``dict(inputs=dict(src=uint8 [3, H, W], trg=...), data_samples=dict(...))``.

    The data sample is every other key of the pair dict (all fields of
    the data contract (``correspondence/README.md``), plus ``src_frame``/``trg_frame``; ``'original'`` frames are
    recorded when no :class:`ResizePair` ran), minus the image arrays and the keys in
    ``drop_keys``.
    """

    def __init__(self, drop_keys=('src_img_shape', 'trg_img_shape', 'sample_idx')):
        self.drop_keys = tuple(drop_keys)

    def transform(self, results):
        inputs = {}
        for side in SIDES:
            image = results.get(f'{side}_img')
            if image is None:
                raise KeyError(f'PackPair needs {side}_img; put LoadImagePair before it.')
            if f'{side}_frame' not in results:
                h, w = image.shape[:2]
                results[f'{side}_frame'] = frame_dict(frame_transform((w, h), 'original'))
            inputs[side] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        skip = {'src_img', 'trg_img', *self.drop_keys}
        sample = {k: v for k, v in results.items() if k not in skip}
        return dict(inputs=inputs, data_samples=sample)


@FUNCTIONS.register_module()
def pair_collate(batch):
    """Collate packed pairs: ``inputs.src`` / ``inputs.trg`` stacked to ``[B, 3, H, W]`` when all
    images of that side have one size, else kept as a list; ``data_samples`` a list of dicts.

    Use it as the data loader's ``collate_fn=dict(type='pair_collate')``.
    """
    inputs = {}
    for side in SIDES:
        images = [item['inputs'][side] for item in batch]
        same = all(img.shape == images[0].shape for img in images)
        inputs[side] = torch.stack(images) if same else images
    return dict(inputs=inputs, data_samples=[item['data_samples'] for item in batch])
