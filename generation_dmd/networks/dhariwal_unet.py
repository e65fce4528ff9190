"""DhariwalUNet: the ADM U-Net of Dhariwal & Nichol (2021) in the form used by EDM (ImageNet-64).

The one rule: the module tree mirrors NVlabs/edm's ``DhariwalUNet`` name for name
(``map_noise``, ``map_augment``, ``map_layer0``/``1``, ``map_label``, ``enc.<R>x<R>_conv|_down|
_block<i>``, ``dec.<R>x<R>_in0|_in1|_up|_block<i>``, ``out_norm``, ``out_conv``) so EDM's released
ADM checkpoints load with ``strict=True``; the entries of ``enc``/``dec`` run in insertion order.
Unlike SongUNet, the class embedding is added after the mapping MLP (``map_label`` has no bias)
and blocks use adaptive scale/shift with 64 channels per attention head.

EDM's ImageNet-64 configuration: ``model_channels=192, channel_mult=[1,2,3,4], num_blocks=3,
attn_resolutions=[32,16,8], dropout=0.1``.
"""
import math

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS

from .layers import Conv2d, GroupNorm, Linear, PositionalEmbedding, UNetBlock
from .song_unet import check_resolution, label_input


@MODELS.register_module()
class DhariwalUNet(torch.nn.Module):
    """ADM network ``F(x, noise_labels, class_labels, augment_labels) -> same shape as x``."""

    def __init__(self, img_resolution, in_channels, out_channels, label_dim=0, augment_dim=0,
                 model_channels=192, channel_mult=(1, 2, 3, 4), channel_mult_emb=4, num_blocks=3,
                 attn_resolutions=(32, 16, 8), dropout=0.10, label_dropout=0):
        super().__init__()
        channel_mult = list(channel_mult)
        check_resolution(img_resolution, len(channel_mult), 'DhariwalUNet')
        self.img_resolution = img_resolution
        self.label_dropout = label_dropout
        emb_channels = model_channels * channel_mult_emb
        init = dict(init_mode='kaiming_uniform', init_weight=math.sqrt(1 / 3),
                    init_bias=math.sqrt(1 / 3))
        init_zero = dict(init_mode='kaiming_uniform', init_weight=0, init_bias=0)
        block = dict(emb_channels=emb_channels, channels_per_head=64, dropout=dropout, init=init,
                     init_zero=init_zero)

        # Mapping network.
        self.map_noise = PositionalEmbedding(model_channels)
        self.map_augment = (Linear(augment_dim, model_channels, bias=False, **init_zero)
                            if augment_dim else None)
        self.map_layer0 = Linear(model_channels, emb_channels, **init)
        self.map_layer1 = Linear(emb_channels, emb_channels, **init)
        self.map_label = (Linear(label_dim, emb_channels, bias=False, init_mode='kaiming_normal',
                                 init_weight=math.sqrt(label_dim)) if label_dim else None)

        # Encoder.
        self.enc = torch.nn.ModuleDict()
        channels = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            tag = f'{res}x{res}'
            if level == 0:
                self.enc[f'{tag}_conv'] = Conv2d(channels, model_channels * mult, kernel=3, **init)
                channels = model_channels * mult
            else:
                self.enc[f'{tag}_down'] = UNetBlock(channels, channels, down=True, **block)
            for idx in range(num_blocks):
                self.enc[f'{tag}_block{idx}'] = UNetBlock(
                    channels, model_channels * mult, attention=res in attn_resolutions, **block)
                channels = model_channels * mult
        skips = [m.out_channels for m in self.enc.values()]

        # Decoder.
        self.dec = torch.nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            tag = f'{res}x{res}'
            if level == len(channel_mult) - 1:
                self.dec[f'{tag}_in0'] = UNetBlock(channels, channels, attention=True, **block)
                self.dec[f'{tag}_in1'] = UNetBlock(channels, channels, **block)
            else:
                self.dec[f'{tag}_up'] = UNetBlock(channels, channels, up=True, **block)
            for idx in range(num_blocks + 1):
                cin = channels + skips.pop()
                channels = model_channels * mult
                self.dec[f'{tag}_block{idx}'] = UNetBlock(
                    cin, channels, attention=res in attn_resolutions, **block)
        self.out_norm = GroupNorm(channels)
        self.out_conv = Conv2d(channels, out_channels, kernel=3, **init_zero)

    def embed(self, noise_labels, class_labels, augment_labels, batch, device):
        """The conditioning vector fed to every block."""
        emb = self.map_noise(noise_labels)
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        emb = self.map_layer1(F.silu(self.map_layer0(emb)))
        if self.map_label is not None:
            labels = label_input(class_labels, self.map_label.in_features, batch, self.training,
                                 self.label_dropout, device)
            emb = emb + self.map_label(labels)
        return F.silu(emb)

    def forward(self, x, noise_labels, class_labels=None, augment_labels=None):
        emb = self.embed(noise_labels, class_labels, augment_labels, x.shape[0], x.device)
        skips = []
        for module in self.enc.values():
            x = module(x, emb) if isinstance(module, UNetBlock) else module(x)
            skips.append(x)
        for module in self.dec.values():
            if x.shape[1] != module.in_channels:
                x = torch.cat([x, skips.pop()], dim=1)
            x = module(x, emb)
        return self.out_conv(F.silu(self.out_norm(x)))
