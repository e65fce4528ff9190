"""Building blocks of the EDM networks (SongUNet, DhariwalUNet), with NVlabs/edm's parameter names.

The one rule: attribute names, parameter shapes and buffer names here are part of a file format.
The released EDM checkpoints are loaded with ``strict=True`` against the ``state_dict()`` of these
modules, so ``weight``/``bias``/``resample_filter``/``freqs`` and the sub-module names of
:class:`UNetBlock` (``norm0 conv0 affine norm1 conv1 skip norm2 qkv proj``) must not be renamed,
and a parameter that EDM does not have (e.g. the weight of a kernel-0 resampling conv) must not be
created. Every layer casts its weights to the dtype of its input, so the whole network runs in the
dtype of ``x`` (float16 when a preconditioner asks for it) while its parameters stay float32.
"""
import math

import torch
import torch.nn.functional as F

INIT_MODES = ('xavier_uniform', 'xavier_normal', 'kaiming_uniform', 'kaiming_normal')


def weight_init(shape, mode, fan_in, fan_out):
    """A random tensor of ``shape`` for one of EDM's four initialisations (see ``INIT_MODES``)."""
    if mode == 'xavier_uniform':
        return math.sqrt(6 / (fan_in + fan_out)) * (torch.rand(*shape) * 2 - 1)
    if mode == 'xavier_normal':
        return math.sqrt(2 / (fan_in + fan_out)) * torch.randn(*shape)
    if mode == 'kaiming_uniform':
        return math.sqrt(3 / fan_in) * (torch.rand(*shape) * 2 - 1)
    if mode == 'kaiming_normal':
        return math.sqrt(1 / fan_in) * torch.randn(*shape)
    raise ValueError(
        f'Unknown weight initialisation mode {mode!r} for an EDM layer: expected one of '
        f'{", ".join(INIT_MODES)}. Fix the init_mode in the network configuration.')


def _resample_kernel(resample_filter):
    """The separable 2-D low-pass kernel (1, 1, k, k) of a 1-D filter, normalised to sum 1."""
    taps = torch.as_tensor(resample_filter, dtype=torch.float32)
    if taps.ndim != 1 or taps.numel() < 1 or float(taps.sum()) == 0:
        raise ValueError(
            f'resample_filter {list(resample_filter)!r} is not a usable 1-D filter: expected a '
            'non-empty list of taps with a non-zero sum, such as [1, 1] (DDPM++, ADM) or '
            '[1, 3, 3, 1] (NCSN++). Fix resample_filter in the network configuration.')
    kernel = torch.outer(taps, taps) / taps.sum() ** 2
    return kernel[None, None]


class Linear(torch.nn.Module):
    """``y = x W^T + b`` with EDM's initialisation; ``weight`` is (out_features, in_features)."""

    def __init__(self, in_features, out_features, bias=True, init_mode='kaiming_normal',
                 init_weight=1, init_bias=0):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        fans = dict(mode=init_mode, fan_in=in_features, fan_out=out_features)
        self.weight = torch.nn.Parameter(
            weight_init([out_features, in_features], **fans) * init_weight)
        self.bias = (torch.nn.Parameter(weight_init([out_features], **fans) * init_bias)
                     if bias else None)

    def forward(self, x):
        out = x @ self.weight.to(x.dtype).t()
        if self.bias is not None:
            out = out + self.bias.to(x.dtype)
        return out


class Conv2d(torch.nn.Module):
    """A square convolution with optional 2x up- or down-sampling by a fixed low-pass filter.

    ``kernel=0`` means "resample only": no ``weight`` and no ``bias`` exist (as in EDM, whose
    checkpoints then hold only the ``resample_filter`` buffer). The buffer exists only when the
    layer resamples. ``fused_resample`` applies the filter on the far side of the convolution
    (EDM's NCSN++ ``aux_residual`` layers); the numbers differ from the unfused order.
    """

    def __init__(self, in_channels, out_channels, kernel, bias=True, up=False, down=False,
                 resample_filter=(1, 1), fused_resample=False, init_mode='kaiming_normal',
                 init_weight=1, init_bias=0):
        super().__init__()
        if up and down:
            raise ValueError(
                f'An EDM Conv2d ({in_channels}->{out_channels} channels) was asked to both '
                'up- and down-sample: expected at most one of up=True / down=True. Fix the '
                'block that builds it.')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.up = up
        self.down = down
        self.fused_resample = fused_resample
        fans = dict(mode=init_mode, fan_in=in_channels * kernel * kernel,
                    fan_out=out_channels * kernel * kernel)
        self.weight = (torch.nn.Parameter(
            weight_init([out_channels, in_channels, kernel, kernel], **fans) * init_weight)
            if kernel else None)
        self.bias = (torch.nn.Parameter(weight_init([out_channels], **fans) * init_bias)
                     if kernel and bias else None)
        self.register_buffer('resample_filter',
                             _resample_kernel(resample_filter) if (up or down) else None)

    def _filter_bank(self, channels, dtype):
        return self.resample_filter.to(dtype).expand(channels, 1, -1, -1)

    def forward(self, x):
        w = None if self.weight is None else self.weight.to(x.dtype)
        w_pad = 0 if w is None else w.shape[-1] // 2
        f_pad = 0 if self.resample_filter is None else (self.resample_filter.shape[-1] - 1) // 2
        if self.fused_resample and self.up and w is not None:
            bank = self._filter_bank(self.in_channels, x.dtype) * 4
            x = F.conv_transpose2d(x, bank, groups=self.in_channels, stride=2,
                                   padding=w_pad + f_pad)
            x = F.conv2d(x, w)
        elif self.fused_resample and self.down and w is not None:
            x = F.conv2d(x, w, padding=w_pad + f_pad)
            bank = self._filter_bank(self.out_channels, x.dtype)
            x = F.conv2d(x, bank, groups=self.out_channels, stride=2)
        else:
            if self.up:
                bank = self._filter_bank(self.in_channels, x.dtype) * 4
                x = F.conv_transpose2d(x, bank, groups=self.in_channels, stride=2, padding=f_pad)
            if self.down:
                bank = self._filter_bank(self.in_channels, x.dtype)
                x = F.conv2d(x, bank, groups=self.in_channels, stride=2, padding=f_pad)
            if w is not None:
                x = F.conv2d(x, w, padding=w_pad)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype).reshape(1, -1, 1, 1)
        return x


class GroupNorm(torch.nn.Module):
    """Group normalisation with ``min(num_groups, channels // min_channels_per_group)`` groups."""

    def __init__(self, num_channels, num_groups=32, min_channels_per_group=4, eps=1e-5):
        super().__init__()
        self.num_groups = min(num_groups, num_channels // min_channels_per_group)
        if self.num_groups < 1:
            raise ValueError(
                f'GroupNorm over {num_channels} channels would have no group (at least '
                f'{min_channels_per_group} channels per group are required). Use more channels '
                '(model_channels x channel_mult) in the network configuration.')
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.ones(num_channels))
        self.bias = torch.nn.Parameter(torch.zeros(num_channels))

    def forward(self, x):
        return F.group_norm(x, self.num_groups, self.weight.to(x.dtype), self.bias.to(x.dtype),
                            self.eps)


def attention_weights(q, k):
    """softmax over keys of q.k / sqrt(channels), computed in float32, returned in q's dtype.

    ``q``, ``k``: (batch*heads, channels, positions) -> (batch*heads, query, key).
    """
    scale = 1 / math.sqrt(k.shape[1])
    logits = torch.einsum('ncq,nck->nqk', q.float(), k.float() * scale)
    return logits.softmax(dim=2).to(q.dtype)


class UNetBlock(torch.nn.Module):
    """Residual block (GN-SiLU-conv, embedding, GN-SiLU-dropout-conv) + optional self-attention.

    Serves DDPM++/NCSN++ (``adaptive_scale=False``: the embedding is added) and ADM
    (``adaptive_scale=True``: the embedding gives a scale and a shift). The attention's ``qkv``
    conv output is read per head as (channels_per_head, 3) interleaved, as EDM does; changing that
    order would silently scramble released weights.
    """

    def __init__(self, in_channels, out_channels, emb_channels, up=False, down=False,
                 attention=False, num_heads=None, channels_per_head=64, dropout=0, skip_scale=1,
                 eps=1e-5, resample_filter=(1, 1), resample_proj=False, adaptive_scale=True,
                 init=None, init_zero=None, init_attn=None):
        super().__init__()
        init = dict(init or {})
        init_zero = dict(init_weight=0) if init_zero is None else dict(init_zero)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.emb_channels = emb_channels
        if not attention:
            self.num_heads = 0
        else:
            # As in EDM, fewer than channels_per_head channels give 0 heads: no attention layers.
            self.num_heads = (num_heads if num_heads is not None
                              else out_channels // channels_per_head)
            if self.num_heads < 0 or (self.num_heads and out_channels % self.num_heads):
                raise ValueError(
                    f'An attention block with {out_channels} channels cannot be split into '
                    f'{self.num_heads} heads: expected a number of heads dividing the '
                    'channels. Change the channels or channels_per_head of the network.')
        self.dropout = dropout
        self.skip_scale = skip_scale
        self.adaptive_scale = adaptive_scale

        self.norm0 = GroupNorm(in_channels, eps=eps)
        self.conv0 = Conv2d(in_channels, out_channels, kernel=3, up=up, down=down,
                            resample_filter=resample_filter, **init)
        self.affine = Linear(emb_channels, out_channels * (2 if adaptive_scale else 1), **init)
        self.norm1 = GroupNorm(out_channels, eps=eps)
        self.conv1 = Conv2d(out_channels, out_channels, kernel=3, **init_zero)
        self.skip = None
        if out_channels != in_channels or up or down:
            kernel = 1 if (resample_proj or out_channels != in_channels) else 0
            self.skip = Conv2d(in_channels, out_channels, kernel=kernel, up=up, down=down,
                               resample_filter=resample_filter, **init)
        if self.num_heads:
            self.norm2 = GroupNorm(out_channels, eps=eps)
            self.qkv = Conv2d(out_channels, out_channels * 3, kernel=1,
                              **(init if init_attn is None else dict(init_attn)))
            self.proj = Conv2d(out_channels, out_channels, kernel=1, **init_zero)

    def forward(self, x, emb):
        shortcut = x
        h = self.conv0(F.silu(self.norm0(x)))
        params = self.affine(emb)[:, :, None, None].to(h.dtype)
        if self.adaptive_scale:
            scale, shift = params.chunk(2, dim=1)
            h = F.silu(self.norm1(h) * (scale + 1) + shift)
        else:
            h = F.silu(self.norm1(h + params))
        h = self.conv1(F.dropout(h, p=self.dropout, training=self.training))
        h = (h + (shortcut if self.skip is None else self.skip(shortcut))) * self.skip_scale
        if self.num_heads:
            n, c, height, width = h.shape
            qkv = self.qkv(self.norm2(h)).reshape(n * self.num_heads, c // self.num_heads, 3, -1)
            q, k, v = qkv.unbind(2)
            a = torch.einsum('nqk,nck->ncq', attention_weights(q, k), v)
            h = (self.proj(a.reshape(n, c, height, width)) + h) * self.skip_scale
        return h


class PositionalEmbedding(torch.nn.Module):
    """Sinusoidal embedding [cos(x f_i), sin(x f_i)], f_i = max_positions^(-i/D).

    D = num_channels/2, minus 1 with ``endpoint=True`` (SongUNet): the last f_i = 1/max_positions.

    Has no parameters and no buffers.
    """

    def __init__(self, num_channels, max_positions=10000, endpoint=False):
        super().__init__()
        self.num_channels = num_channels
        self.max_positions = max_positions
        self.endpoint = endpoint

    def forward(self, x):
        half = self.num_channels // 2
        exponents = torch.arange(half, dtype=torch.float32, device=x.device)
        exponents = exponents / (half - (1 if self.endpoint else 0))
        freqs = (1.0 / self.max_positions) ** exponents
        angles = torch.outer(x, freqs.to(x.dtype))
        return torch.cat([angles.cos(), angles.sin()], dim=1)


class FourierEmbedding(torch.nn.Module):
    """Random Fourier features [cos(2 pi x f), sin(2 pi x f)], f ~ N(0, scale^2) in ``freqs``."""

    def __init__(self, num_channels, scale=16):
        super().__init__()
        self.register_buffer('freqs', torch.randn(num_channels // 2) * scale)

    def forward(self, x):
        angles = torch.outer(x, (2 * math.pi * self.freqs).to(x.dtype))
        return torch.cat([angles.cos(), angles.sin()], dim=1)
