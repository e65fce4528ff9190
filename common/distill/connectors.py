"""Connectors map a student feature into the teacher's feature space before a distillation loss.

A connector is trained with the student (its parameters belong to the distiller, never to the
frozen teacher). All are registered in mmengine's root ``MODELS`` registry::

    dict(type='ConvConnector', in_channels=512, out_channels=256)

``align_spatial`` resizes a student map to the teacher's H×W (RepFusion's dense CelebA-HQ setting
resizes the connector output bilinearly).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmengine.registry import MODELS

__all__ = ['ConvConnector', 'LinearConnector', 'IdentityConnector', 'align_spatial']

_ALIGN_CORNERS_MODES = ('linear', 'bilinear', 'bicubic', 'trilinear')


@MODELS.register_module()
class ConvConnector(BaseModule):
    """1×1 convolution from student channels to teacher channels, optionally + BN and ReLU.

    The default is RepFusion's adapter: a plain 1×1 ``Conv2d`` with bias. With ``norm=True`` a
    ``BatchNorm2d`` follows and the conv has no bias (the BN's shift replaces it); with
    ``act=True`` a ``ReLU`` comes last. Input [B, C_in, H, W] → [B, C_out, H, W]; a pooled
    [B, C_in] input is treated as a 1×1 map and returned as [B, C_out].

    Args:
        in_channels (int): student channels.
        out_channels (int): teacher channels.
        norm (bool): add ``BatchNorm2d(out_channels)`` after the conv.
        act (bool): add ``ReLU`` at the end.
        init_cfg (dict | list[dict] | None): mmengine initialisation config.
    """

    def __init__(self, in_channels, out_channels, norm=False, act=False, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=not norm)
        self.bn = nn.BatchNorm2d(out_channels) if norm else None
        self.act = nn.ReLU(inplace=True) if act else None

    def forward(self, x):
        if x.dim() not in (2, 4):
            raise ValueError(f'ConvConnector: expected [B, C, H, W] or [B, C], got shape '
                             f'{tuple(x.shape)}.')
        pooled = x.dim() == 2
        if pooled:
            x = x[:, :, None, None]
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.act is not None:
            x = self.act(x)
        return x.flatten(1) if pooled else x


@MODELS.register_module()
class LinearConnector(BaseModule):
    """``nn.Linear(in_features, out_features)`` on the last dim of pooled vectors [B, C_in] (or
    tokens [B, N, C_in]). A 4-D [B, C, H, W] map is refused: pool it or use ``ConvConnector``.

    Args:
        in_features (int): student feature width.
        out_features (int): teacher feature width.
        init_cfg (dict | list[dict] | None): mmengine initialisation config.
    """

    def __init__(self, in_features, out_features, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, x):
        if x.dim() == 4:
            raise ValueError(f'LinearConnector: got a feature map of shape {tuple(x.shape)}; '
                             f'pool it to [B, C] first or use ConvConnector.')
        return self.linear(x)


@MODELS.register_module()
class IdentityConnector(nn.Module):
    """Returns its input unchanged (for losses that need no mapping, or matching widths)."""

    def forward(self, x):
        return x


def align_spatial(student, teacher, mode='bilinear'):
    """Resize ``student`` [B, C, H, W] to the teacher's H×W.

    ``teacher`` is the teacher tensor (its last two dims are used) or an ``(H, W)`` size. Up- and
    down-sampling both use ``F.interpolate(student, size, mode, align_corners=False)``
    (``align_corners`` is only passed for interpolating modes, e.g. not for ``'nearest'``). When
    the sizes already match, ``student`` itself is returned.
    """
    is_map = isinstance(teacher, torch.Tensor)
    size = tuple(teacher.shape[-2:]) if is_map else tuple(teacher)
    if student.dim() != 4 or (is_map and teacher.dim() != 4) or len(size) != 2:
        got = tuple(teacher.shape) if is_map else size
        raise ValueError(f'align_spatial: expected a [B, C, H, W] student and a [B, C, H, W] '
                         f'teacher or an (H, W) size, got {tuple(student.shape)} and {got}.')
    if tuple(student.shape[-2:]) == size:
        return student
    kwargs = dict(align_corners=False) if mode in _ALIGN_CORNERS_MODES else {}
    return F.interpolate(student, size=size, mode=mode, **kwargs)
