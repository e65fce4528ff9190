"""A compact stand-in for OpenAI guided-diffusion's UNet, used only as a test oracle.

Written from a description of the architecture, for tests. Its module names and nesting follow
the original checkpoints' key layout (``input_blocks.3.0.in_layers.2.weight``,
``middle_block.1.qkv.weight``, ``out.2.bias``, ...), so its ``state_dict()`` looks like a real
checkpoint and its forward is what a converted model must reproduce. Both attention channel
layouts are implemented: legacy ``qkv`` channels grouped per head (``[head][q|k|v][ch]``) and the
new order grouped per role (``[q|k|v][head][ch]``).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_CHANNEL_MULT = {256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}


def timestep_features(t, dim, max_period=10000):
    """``[cos | sin]`` of ``t`` times ``dim // 2`` geometric frequencies from 1 to 1/max_period."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]
    feats = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    return F.pad(feats, (0, 1)) if dim % 2 else feats


def norm(channels):
    return nn.GroupNorm(32, channels)


class Downsample(nn.Module):
    """Halve the resolution: a stride-2 3x3 conv (``op``) or, without conv, 2x2 average pooling."""

    def __init__(self, channels, use_conv):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv \
            else nn.AvgPool2d(2)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    """Double the resolution by nearest-neighbour repetition, then optionally a 3x3 ``conv``."""

    def __init__(self, channels, use_conv):
        super().__init__()
        if use_conv:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        x = F.interpolate(x, scale_factor=2, mode='nearest')
        return self.conv(x) if hasattr(self, 'conv') else x


class ResBlock(nn.Module):
    """Norm-act-conv, add (or scale-and-shift by) the embedding, norm-act-dropout-conv, + skip.

    With ``up``/``down`` the resolution changes between the first activation and the first conv,
    on both the main path and the skip path.
    """

    def __init__(self, channels, emb_channels, out_channels, dropout=0.0,
                 use_scale_shift_norm=False, up=False, down=False):
        super().__init__()
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(norm(channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        if up:
            self.resample = Upsample(channels, use_conv=False)
        elif down:
            self.resample = Downsample(channels, use_conv=False)
        else:
            self.resample = None
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, out_channels * (2 if use_scale_shift_norm else 1)))
        self.out_layers = nn.Sequential(norm(out_channels), nn.SiLU(), nn.Dropout(dropout),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip_connection = nn.Identity() if out_channels == channels \
            else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x, emb):
        h = self.in_layers[:-1](x)
        if self.resample is not None:
            h, x = self.resample(h), self.resample(x)
        h = self.in_layers[-1](h)
        e = self.emb_layers(emb)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[1:](self.out_layers[0](h) * (1 + scale) + shift)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all pixels, plus the input; ``qkv``/``proj_out`` are 1x1
    conv1d layers."""

    def __init__(self, channels, heads, new_order):
        super().__init__()
        self.heads, self.new_order = heads, new_order
        self.norm = norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x):
        b, c, height, width = x.shape
        flat = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(flat))
        d = c // self.heads
        if self.new_order:  # channels [q|k|v][head][ch]
            q, k, v = qkv.reshape(b, 3, self.heads, d, -1).unbind(1)
        else:  # channels [head][q|k|v][ch]
            q, k, v = qkv.reshape(b, self.heads, 3, d, -1).unbind(2)
        scale = d ** -0.25  # on both q and k: 1/sqrt(d) overall
        weights = torch.einsum('bhdt,bhds->bhts', q * scale, k * scale).softmax(dim=-1)
        mixed = torch.einsum('bhts,bhds->bhdt', weights, v).reshape(b, c, -1)
        return (flat + self.proj_out(mixed)).reshape(b, c, height, width)


class Stage(nn.Sequential):
    """A sequence of layers; ResBlocks also receive the embedding."""

    def forward(self, x, emb):
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class GuidedDiffusionUNet(nn.Module):
    """The UNet; ``attention_ds`` are the downsampling factors (1, 2, 4, ...) with attention."""

    def __init__(self, model_channels, out_channels, num_res_blocks, attention_ds, channel_mult,
                 num_classes=None, num_heads=1, num_head_channels=-1, num_heads_upsample=-1,
                 use_scale_shift_norm=False, resblock_updown=False, use_new_attention_order=False,
                 dropout=0.0, in_channels=3):
        super().__init__()
        self.model_channels, self.num_classes = model_channels, num_classes
        emb = 4 * model_channels
        heads_up = num_heads if num_heads_upsample == -1 else num_heads_upsample

        def res(cin, cout, **updown):
            return ResBlock(cin, emb, cout, dropout, use_scale_shift_norm, **updown)

        def attn(c, heads):
            heads = heads if num_head_channels == -1 else c // num_head_channels
            return AttentionBlock(c, heads, use_new_attention_order)

        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb), nn.SiLU(),
                                        nn.Linear(emb, emb))
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, emb)

        ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([Stage(nn.Conv2d(in_channels, ch, 3, padding=1))])
        skips, ds = [ch], 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers, ch = [res(ch, int(mult * model_channels))], int(mult * model_channels)
                if ds in attention_ds:
                    layers.append(attn(ch, num_heads))
                self.input_blocks.append(Stage(*layers))
                skips.append(ch)
            if level < len(channel_mult) - 1:
                down = res(ch, ch, down=True) if resblock_updown else Downsample(ch, True)
                self.input_blocks.append(Stage(down))
                skips.append(ch)
                ds *= 2

        self.middle_block = Stage(res(ch, ch), attn(ch, num_heads), res(ch, ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                width = int(mult * model_channels)
                layers, ch = [res(ch + skips.pop(), width)], width
                if ds in attention_ds:
                    layers.append(attn(ch, heads_up))
                if level > 0 and i == num_res_blocks:
                    layers.append(res(ch, ch, up=True) if resblock_updown else Upsample(ch, True))
                    ds //= 2
                self.output_blocks.append(Stage(*layers))

        self.out = nn.Sequential(norm(ch), nn.SiLU(), nn.Conv2d(ch, out_channels, 3, padding=1))

    def forward(self, x, t, y=None):
        emb = self.time_embed(timestep_features(t, self.model_channels))
        if self.num_classes is not None:
            emb = emb + self.label_emb(y)
        h, skips = x, []
        for stage in self.input_blocks:
            h = stage(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for stage in self.output_blocks:
            h = stage(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)


def reference_unet_from_flags(image_size=64, num_channels=128, num_res_blocks=2,
                              attention_resolutions='16,8', num_heads=4, num_head_channels=-1,
                              num_heads_upsample=-1, channel_mult='', learn_sigma=False,
                              class_cond=False, use_scale_shift_norm=True, resblock_updown=False,
                              use_new_attention_order=False, dropout=0.0):
    """Build the oracle from guided-diffusion's script flags (same names and defaults)."""
    mults = (tuple(int(m) for m in channel_mult.split(',')) if channel_mult
             else DEFAULT_CHANNEL_MULT[image_size])
    return GuidedDiffusionUNet(
        model_channels=num_channels, out_channels=6 if learn_sigma else 3,
        num_res_blocks=num_res_blocks,
        attention_ds={image_size // int(r) for r in attention_resolutions.split(',')},
        channel_mult=mults, num_classes=1000 if class_cond else None, num_heads=num_heads,
        num_head_channels=num_head_channels, num_heads_upsample=num_heads_upsample,
        use_scale_shift_norm=use_scale_shift_norm, resblock_updown=resblock_updown,
        use_new_attention_order=use_new_attention_order, dropout=dropout)
