"""DMD2's GAN discriminator: a small classifier on the fake score's bottleneck features.

The one rule: the discriminator owns no backbone. It reads the output of one module of the FAKE
score (``default_bottleneck``: the last encoder block of an EDM network, ``unet.mid_block`` of a
diffusers UNet), captured by a forward hook during a fake-score call, so the fake score's
encoder is the discriminator's feature extractor and is trained by the discriminator loss too
(DMD2). :func:`resolve_bottleneck` turns the module path into the module, with the nearest valid
paths in the error for a typo.
"""
import torch
import torch.nn.functional as F
from mmengine.registry import MODELS

from common.feature_hooks import FeatureRecorder, resolve_modules


def _group_count(channels, num_groups):
    """The largest divisor of ``channels`` that is <= ``num_groups`` and leaves at least two
    channels per group (one channel per group would normalise a 1x1 map to zero)."""
    limit = max(1, min(num_groups, channels // 2 if channels >= 2 else 1))
    return max(g for g in range(1, limit + 1) if channels % g == 0)


@MODELS.register_module()
class BottleneckClassifier(torch.nn.Module):
    """One realism logit per image from bottleneck features ``(B, in_channels, H, W)``.

    Conv 4x4 stride 2 (padding 1) -> GroupNorm -> SiLU -> Conv 4x4 stride 4 -> GroupNorm ->
    SiLU -> Conv 1x1 -> one channel, averaged over the remaining positions (DMD2's
    ``cls_pred_branch``; an 8x8 map becomes 4x4, then 1x1). Small maps (1x1 .. 8x8) work with the
    same weights: a map smaller than 2x2 is zero-padded (bottom/right) to 2x2 before the first
    convolution, and one smaller than 4x4 to 4x4 before the second, so every size ends in at
    least one position. Larger maps (16x16 -> 2x2) are averaged at the end.

    Args:
        in_channels: channels of the bottleneck (256 for EDM's CIFAR-10 DDPM++, 768 for ImageNet
            ADM).
        hidden: channels of the two hidden convolutions (default ``in_channels``, as DMD2).
        num_groups: GroupNorm groups (32 as DMD2), capped to a divisor of ``hidden`` that leaves
            at least two channels per group.
    """

    def __init__(self, in_channels, hidden=None, num_groups=32):
        super().__init__()
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f'BottleneckClassifier: in_channels={in_channels!r}; expected the '
                             f'positive channel count of the fake score\'s bottleneck.')
        hidden = in_channels if hidden is None else int(hidden)
        groups = _group_count(hidden, int(num_groups))
        self.in_channels = in_channels
        self.conv0 = torch.nn.Conv2d(in_channels, hidden, 4, stride=2, padding=1)
        self.norm0 = torch.nn.GroupNorm(groups, hidden)
        self.conv1 = torch.nn.Conv2d(hidden, hidden, 4, stride=4, padding=0)
        self.norm1 = torch.nn.GroupNorm(groups, hidden)
        self.out = torch.nn.Conv2d(hidden, 1, 1)

    @staticmethod
    def _pad_to(x, size):
        ph, pw = max(0, size - x.shape[-2]), max(0, size - x.shape[-1])
        return F.pad(x, (0, pw, 0, ph)) if ph or pw else x

    def forward(self, features):
        if features.dim() != 4 or features.shape[1] != self.in_channels:
            raise ValueError(
                f'BottleneckClassifier: features of shape {tuple(features.shape)}; expected '
                f'(batch, {self.in_channels}, H, W). Set head.in_channels to the channel count '
                f'of the bottleneck module (gan.bottleneck).')
        x = features.float()
        x = F.silu(self.norm0(self.conv0(self._pad_to(x, 2))))
        x = F.silu(self.norm1(self.conv1(self._pad_to(x, 4))))
        return self.out(x).mean(dim=(1, 2, 3))


def default_bottleneck(net):
    """The default bottleneck module path of a denoiser: for EDM preconditioners (SongUNet,
    DhariwalUNet) the last encoder entry that is not an auxiliary (skip/residual) path,
    ``model.enc.<key>``; for ``DiffusersDenoiser`` ``unet.mid_block``."""
    if hasattr(net, 'unet') and hasattr(net.unet, 'mid_block'):
        return 'unet.mid_block'
    enc = getattr(getattr(net, 'model', None), 'enc', None)
    if isinstance(enc, torch.nn.ModuleDict):
        keys = [k for k in enc.keys() if 'aux' not in k]
        return f'model.enc.{keys[-1]}'
    raise ValueError(
        f'No default GAN bottleneck for a {type(net).__name__} fake score: expected an EDM '
        f'preconditioner (model.enc) or a DiffusersDenoiser (unet.mid_block). Set '
        f'gan.bottleneck to a module path of the fake score.')


def resolve_bottleneck(net, path=None):
    """``(path, module)`` of the bottleneck of ``net`` (``default_bottleneck`` when ``path`` is
    None); an unknown path raises one paragraph listing the nearest module paths."""
    path = default_bottleneck(net) if path is None else path
    listing = '`[n for n, _ in model.fake_score.named_modules()]`'
    return path, resolve_modules(net, [path], what='fake score (gan.bottleneck)',
                                 how_to_list=listing)[path]


def bottleneck_channels(net, path=None, image_shape=(3, 32, 32), num_classes=None):
    """The channel count of the bottleneck output, from one tiny forward of ``net`` (1 image at
    sigma 1, all-zero label), stopped at the bottleneck."""
    path, module = resolve_bottleneck(net, path)
    device = next(net.parameters()).device
    x = torch.zeros((1, ) + tuple(image_shape), device=device)
    labels = torch.zeros(1, num_classes, device=device) if num_classes else None
    if labels is not None and hasattr(net, 'unet'):
        labels = torch.zeros(1, dtype=torch.long, device=device)
    was_training = net.training
    net.eval()  # no dropout: the probe draws no random numbers
    try:
        with torch.no_grad(), FeatureRecorder({path: module}, early_exit=True) as rec:
            out = rec.run(lambda: net(x, torch.ones(1, device=device), labels))
    finally:
        net.train(was_training)
    return int(out[path].shape[1])
