"""Coordinates of semantic correspondence: image frames, feature grids and the maps between them.

The one rule: keypoints are ``[..., 2]`` tensors of ``(x, y)`` in pixel units of some frame, with
pixel ``i``'s centre at coordinate ``i`` (the convention of every reference: SPair-71k's integer
keypoints index pixel centres). Every conversion here is explicit about which frame it leaves and
which it enters, so an evaluation can state in which frame it measured.

Frames (how an original ``W x H`` image is turned into the ``size`` the model sees):

* ``'original'``: the image as stored; identity.
* ``'stretched'``: resized to ``size`` (``(W', H')`` or ``S`` for ``S x S``) per axis:
  ``x' = x * W'/W``, ``y' = y * H'/H`` (DistillDIFT's release, Hyperfeatures, Hedlin).
* ``'padded'``: resized by ``s = S / max(W, H)`` on both axes to ``round(W s) x round(H s)`` and
  zero-padded, centred, to ``S x S``: ``x' = x s + (S - round(W s)) // 2`` and the same for ``y``
  (SD-DINO / GeoAware's ``preprocess_kps_pad``).

Keypoints are scaled by plain multiplication, as the references do (not the half-pixel-corrected
``(x + 0.5) s - 0.5``), so thresholds and predictions reproduce theirs.

Feature grids: a ``h x w`` feature map covering a ``H x W`` frame has cell ``(i, j)`` centred at
pixel ``((j + 0.5) W/w - 0.5, (i + 0.5) H/h - 0.5)`` (``align_corners=False``; for a ViT with
patch 14 and stride 14 this is SD-DINO's ``idx * 14 + 7 - 0.5``). Fractional grid coordinates
(soft-argmax) map with the same formula.

Dtypes: floating tensors and arrays keep their dtype and device; integer inputs, Python numbers
and lists become float64 (:func:`as_float`).
"""
from dataclasses import dataclass

import numpy as np
import torch

FRAMES = ('original', 'stretched', 'padded')


def as_float(values):
    """``values`` as a floating tensor: floating tensors/arrays keep their dtype (and device);
    integer tensors/arrays, Python numbers and lists become float64."""
    if torch.is_tensor(values):
        return values if torch.is_floating_point(values) else values.double()
    if isinstance(values, np.ndarray) and np.issubdtype(values.dtype, np.floating):
        return torch.as_tensor(values)
    return torch.as_tensor(values, dtype=torch.float64)


def _size_wh(size):
    if isinstance(size, (int, float)):
        return int(size), int(size)
    w, h = size
    return int(w), int(h)


@dataclass(frozen=True)
class FrameTransform:
    """``frame = original * scale + offset`` per axis (``scale`` and ``offset`` are ``(x, y)``)."""
    scale: tuple
    offset: tuple
    size: tuple  # (W, H) of the frame

    def to_frame(self, kps):
        """Original-image keypoints ``[..., 2]`` → this frame."""
        kps = as_float(kps)
        scale = kps.new_tensor(self.scale)
        offset = kps.new_tensor(self.offset)
        return kps * scale + offset

    def from_frame(self, kps):
        """Keypoints ``[..., 2]`` in this frame → original-image pixels."""
        kps = as_float(kps)
        scale = kps.new_tensor(self.scale)
        offset = kps.new_tensor(self.offset)
        return (kps - offset) / scale

    def length_to_frame(self, length, axis='max'):
        """A length (e.g. a PCK threshold) in original pixels → this frame.

        ``axis``: ``'x'``, ``'y'`` or ``'max'`` (the larger scale; equal for 'padded')."""
        sx, sy = self.scale
        factor = dict(x=sx, y=sy, max=max(sx, sy))[axis]
        return length * factor


def frame_transform(image_size, frame='original', size=None):
    """The :class:`FrameTransform` of an original image of ``image_size = (W, H)``.

    ``size``: the frame's size (an int ``S`` or ``(W', H')``); required unless 'original'.
    """
    if frame not in FRAMES:
        raise ValueError(f'frame={frame!r} is not one of {FRAMES}.')
    w, h = (float(v) for v in image_size[:2])
    if w <= 0 or h <= 0:
        raise ValueError(f'image size {tuple(image_size)} must be positive (W, H).')
    if frame == 'original':
        return FrameTransform((1.0, 1.0), (0.0, 0.0), (int(w), int(h)))
    if size is None:
        raise ValueError(f"frame={frame!r} needs a size (an int S or (W, H)).")
    fw, fh = _size_wh(size)
    if frame == 'stretched':
        return FrameTransform((fw / w, fh / h), (0.0, 0.0), (fw, fh))
    if fw != fh:
        raise ValueError(f"frame='padded' pads to a square; got size {(fw, fh)}.")
    s = fw / max(w, h)
    # Resized size rounded as preprocess_kps_pad does (np.around(size * h / w), half to even).
    ox = (fw - round(fw * w / max(w, h))) // 2
    oy = (fh - round(fh * h / max(w, h))) // 2
    return FrameTransform((s, s), (float(ox), float(oy)), (fw, fh))


def grid_to_pixels(coords, grid_hw, frame_wh):
    """Feature-grid coordinates ``[..., 2]`` as ``(col, row)`` (integers: cell indices; floats:
    soft-argmax) → pixel coordinates ``(x, y)`` of the ``frame_wh = (W, H)`` frame."""
    coords = as_float(coords)
    h, w = grid_hw
    fw, fh = frame_wh
    step = coords.new_tensor([fw / w, fh / h])
    return (coords + 0.5) * step - 0.5


def pixels_to_grid(kps, grid_hw, frame_wh):
    """Pixel coordinates ``(x, y)`` of a ``(W, H)`` frame → fractional grid ``(col, row)``
    (the inverse of :func:`grid_to_pixels`)."""
    kps = as_float(kps)
    h, w = grid_hw
    fw, fh = frame_wh
    step = kps.new_tensor([fw / w, fh / h])
    return (kps + 0.5) / step - 0.5


def pixels_to_normalized(kps, frame_wh):
    """Pixel coordinates → ``grid_sample`` coordinates in [-1, 1] (``align_corners=False``): the
    value a bilinear read of any feature map covering the frame takes at those pixels."""
    kps = as_float(kps)
    fw, fh = frame_wh
    return (kps + 0.5) / kps.new_tensor([fw, fh]) * 2 - 1
