"""Distillation losses: ``loss(student, teacher)`` → a scalar already multiplied by ``loss_weight``.

Every loss treats the teacher tensor as a fixed target (it is detached inside ``forward``), so
gradients reach the student (and its connector) only. All losses are registered in mmengine's root
``MODELS`` registry, so configs of every OpenMMLab scope build them from a dict::

    dict(type='DenseL1Loss', loss_weight=10.0)

Feature losses (``PooledMSELoss``, ``DenseMSELoss``, ``DenseL1Loss``, ``FitNetHintLoss``,
``CosineDistanceLoss``) need student and teacher of one shape: a connector maps the student's
channels and ``align_spatial`` its H×W first. ``AttentionTransferLoss`` and ``RelationalKDLoss``
compare channel-free summaries, so they need no connector.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.registry import MODELS

__all__ = [
    'PooledMSELoss', 'DenseMSELoss', 'DenseL1Loss', 'FitNetHintLoss', 'CosineDistanceLoss',
    'AttentionTransferLoss', 'RelationalKDLoss', 'LogitKDLoss'
]

_ALIGN_HINT = ('; map the student with a connector (channels) and align_spatial (H×W) before '
               'this loss')


def _check_same_shape(loss_name, student, teacher, hint=_ALIGN_HINT):
    if student.shape != teacher.shape:
        raise ValueError(f'{loss_name}: student shape {tuple(student.shape)} and teacher shape '
                         f'{tuple(teacher.shape)} differ{hint}.')


def _check_dims(loss_name, tensor, role, dims):
    if tensor.dim() not in dims:
        expected = ' or '.join(f'{d}-D' for d in dims)
        raise ValueError(f'{loss_name}: the {role} must be {expected}, got shape '
                         f'{tuple(tensor.shape)}.')


def _check_same_batch(loss_name, student, teacher):
    if student.shape[0] != teacher.shape[0]:
        raise ValueError(f'{loss_name}: student shape {tuple(student.shape)} and teacher shape '
                         f'{tuple(teacher.shape)} have different batch sizes.')


TARGET_NORMS = (None, 'batch')


def _check_target_norm(loss_name, target_norm):
    if target_norm not in TARGET_NORMS:
        raise ValueError(f'{loss_name}: target_norm={target_norm!r} is not one of {TARGET_NORMS}: '
                         'None keeps the raw teacher feature as the target (RepFusion), \'batch\' '
                         'standardises it per channel over the batch.')
    return target_norm


def standardize_per_channel(x, eps=1e-5):
    """Per-channel standardisation over the batch (and H×W of a [B, C, H, W] map).

    ``(x - mean) / sqrt(var + eps)`` with the biased mean and variance taken over every dim but
    channels (dim 1), the way ``BatchNorm`` without affine normalises in training.
    """
    dims = [0] + list(range(2, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + eps)


def _global_pool(x):
    """[B, C, H, W] → [B, C] by averaging over H×W; [B, C] is returned as is."""
    return x.mean(dim=(2, 3)) if x.dim() == 4 else x


class _WeightedLoss(nn.Module):

    def __init__(self, loss_weight=1.0):
        super().__init__()
        self.loss_weight = float(loss_weight)

    def extra_repr(self):
        return f'loss_weight={self.loss_weight}'


SINGLE_SAMPLE_MODES = ('error', 'skip')


class _FeatureTargetLoss(_WeightedLoss):
    """A feature loss whose teacher target can be standardised first (``target_norm``).

    ``target_norm=None`` (default): the raw teacher feature is the target, as in RepFusion.
    ``target_norm='batch'``: the detached teacher feature is standardised per channel over the
    batch (and H×W) before the loss; the student side is not touched, so its connector learns to
    predict the standardised target. This matters when a teacher feature is mostly a constant
    offset shared by all images: on the digits demo 98% of the pooled mid-block feature's mean
    square is that offset, so the raw MSE falls by learning it and leaves the image-dependent part
    (where class information lives) nearly unfitted (classification_distill/README.md).

    A batch of one has no batch statistics: the pooled target would be all zeros, and a dense
    target would be standardised over that one image's H×W only (a different target). So with
    ``target_norm='batch'`` a batch of one raises ``ValueError`` (``single_sample='error'``,
    default) or gives a zero loss that still reaches the student's graph (``single_sample=
    'skip'``: that batch teaches nothing; e.g. the last, one-image batch of an epoch).
    """

    def __init__(self, loss_weight=1.0, target_norm=None, single_sample='error'):
        super().__init__(loss_weight)
        name = type(self).__name__
        self.target_norm = _check_target_norm(name, target_norm)
        if single_sample not in SINGLE_SAMPLE_MODES:
            raise ValueError(f'{name}: single_sample={single_sample!r} is not one of '
                             f"{SINGLE_SAMPLE_MODES}: 'error' refuses a batch of one under "
                             f"target_norm='batch', 'skip' gives it a zero loss.")
        self.single_sample = single_sample

    def skips(self, teacher):
        """True when this batch gets a zero loss (``target_norm='batch'``, one sample, 'skip').

        Raises ``ValueError`` for a batch of one under ``target_norm='batch'`` and
        ``single_sample='error'``.
        """
        if self.target_norm != 'batch' or teacher.shape[0] != 1:
            return False
        if self.single_sample == 'skip':
            return True
        raise ValueError(
            f"{type(self).__name__}: target_norm='batch' standardises the teacher feature per "
            f'channel over the batch, but this batch has one sample (teacher shape '
            f'{tuple(teacher.shape)}), so the target would be all zeros (pooled) or standardised '
            f'over one image only (dense). Use at least 2 samples per batch and process (set '
            f"drop_last=True in the train dataloader when the last batch can hold one image), "
            f"or set single_sample='skip' on the loss to give such a batch a zero loss.")

    def target(self, teacher):
        teacher = teacher.detach()
        return standardize_per_channel(teacher) if self.target_norm == 'batch' else teacher

    def extra_repr(self):
        extra = f'{super().extra_repr()}, target_norm={self.target_norm!r}'
        if self.single_sample != 'error':
            extra += f', single_sample={self.single_sample!r}'
        return extra


@MODELS.register_module()
class PooledMSELoss(_FeatureTargetLoss):
    """Mean squared error of globally average-pooled features (RepFusion's CIFAR setting).

    ``s = GAP(student)``, ``t = GAP(teacher)`` (``GAP`` averages over H×W of a [B, C, H, W] map;
    [B, C] inputs are taken as already pooled), then
    ``loss = loss_weight * mean_{b,c} (s[b, c] - t[b, c])^2``. With ``target_norm='batch'`` the
    pooled target ``t`` is standardised per channel over the batch first.

    Args:
        loss_weight (float): multiplier of the loss.
        target_norm (str | None): None (RepFusion) or ``'batch'`` (see ``_FeatureTargetLoss``).
        single_sample (str): a batch of one under ``target_norm='batch'``: ``'error'``
            (default) raises, ``'skip'`` gives a zero loss (see ``_FeatureTargetLoss``).
    """

    def forward(self, student, teacher):
        name = type(self).__name__
        _check_dims(name, student, 'student', (2, 4))
        _check_dims(name, teacher, 'teacher', (2, 4))
        s, t = _global_pool(student), _global_pool(teacher)
        if s.shape != t.shape:
            hint = ' after pooling; map the student channels with a connector before this loss'
            _check_same_shape(name, student, teacher, hint=hint)
        if self.skips(t):
            return s.sum() * 0.0
        return self.loss_weight * F.mse_loss(s, self.target(t))


class _DenseFeatureLoss(_FeatureTargetLoss):
    """``loss_weight * distance(student, target(teacher))`` over same-shaped tensors."""

    distance = None  # F.mse_loss or F.l1_loss, set by the subclass

    def forward(self, student, teacher):
        _check_same_shape(type(self).__name__, student, teacher)
        if self.skips(teacher):
            return student.sum() * 0.0
        return self.loss_weight * type(self).distance(student, self.target(teacher))


@MODELS.register_module()
class DenseMSELoss(_DenseFeatureLoss):
    """Dense L2: ``loss = loss_weight * mean over all elements of (student - teacher)^2``.

    RepFusion's CelebA-HQ setting (1×1 connector, student resized to the teacher's H×W). The
    shapes must match exactly; spatial alignment is the caller's job (``align_spatial``).

    Args:
        loss_weight (float): multiplier of the loss.
        target_norm (str | None): None (RepFusion) or ``'batch'`` (see ``_FeatureTargetLoss``).
        single_sample (str): a batch of one under ``target_norm='batch'``: ``'error'``
            (default) raises, ``'skip'`` gives a zero loss (see ``_FeatureTargetLoss``).
    """

    distance = F.mse_loss


@MODELS.register_module()
class DenseL1Loss(_DenseFeatureLoss):
    """Dense L1: ``loss = loss_weight * mean over all elements of |student - teacher|``.

    RepFusion's CelebA-HQ setting for ResNet-50 and HRNet uses it with ``loss_weight=10``. The
    shapes must match exactly; spatial alignment is the caller's job (``align_spatial``).

    Args:
        loss_weight (float): multiplier of the loss.
        target_norm (str | None): None (RepFusion) or ``'batch'`` (see ``_FeatureTargetLoss``).
        single_sample (str): a batch of one under ``target_norm='batch'``: ``'error'``
            (default) raises, ``'skip'`` gives a zero loss (see ``_FeatureTargetLoss``).
    """

    distance = F.l1_loss


@MODELS.register_module()
class FitNetHintLoss(DenseMSELoss):
    """FitNets' hint loss (Romero et al. 2015): dense MSE between the connector-mapped student
    feature map (the "regressor" output) and the teacher's hint feature map.

    ``loss = loss_weight * mean over all elements of (student - teacher)^2`` — the same number as
    ``DenseMSELoss``, under the name configs that follow the paper use.
    """


@MODELS.register_module()
class CosineDistanceLoss(_WeightedLoss):
    """Cosine distance along channels: ``loss = loss_weight * mean(1 - cos(s, t))``.

    ``cos`` is taken along dim 1 (channels) at every position, so a [B, C, H, W] pair gives B×H×W
    cosines and a [B, C] pair gives B; the mean runs over them. The loss is 0 when the student is
    a positive multiple of the teacher and is *minimised* here. (RepFusion's ``'cosine'`` option
    used ``nn.CosineSimilarity`` directly as the loss and so maximised the distance by mistake.)

    Args:
        loss_weight (float): multiplier of the loss.
        eps (float): lower bound of the norms in the cosine (as ``F.cosine_similarity``).
    """

    def __init__(self, loss_weight=1.0, eps=1e-8):
        super().__init__(loss_weight)
        self.eps = eps

    def forward(self, student, teacher):
        teacher = teacher.detach()
        _check_same_shape(type(self).__name__, student, teacher)
        cosine = F.cosine_similarity(student, teacher, dim=1, eps=self.eps)
        return self.loss_weight * (1 - cosine).mean()


@MODELS.register_module()
class AttentionTransferLoss(_WeightedLoss):
    """Attention transfer (Zagoruyko & Komodakis 2017) between feature maps [B, C, H, W].

    Attention map of a feature ``x``: ``a(x) = mean_c |x_c|^p`` ([B, H, W]); when student and
    teacher H×W differ, the student's map is resized bilinearly (``align_corners=False``) to the
    teacher's H×W. Each map is then flattened over H×W to ``q`` and L2-normalised per sample,
    ``q̂ = q / ||q||_2``, and

    ``loss = loss_weight * mean_{b, j} (q̂_s[b, j] - q̂_t[b, j])^2``

    i.e. the mean of squared differences over batch *and* positions, as in the authors' code
    (equal to the batch-mean squared L2 distance ``||q̂_s - q̂_t||^2`` divided by H×W). Channels
    may differ between student and teacher (mean vs sum over channels does not matter after the
    normalisation). RepFusion's AT configs weight it by 1000.

    Args:
        p (float): exponent of the attention map (2 in the paper and in RepFusion).
        loss_weight (float): multiplier of the loss.
    """

    def __init__(self, p=2, loss_weight=1.0):
        super().__init__(loss_weight)
        self.p = p

    def extra_repr(self):
        return f'p={self.p}, loss_weight={self.loss_weight}'

    def attention_map(self, x):
        """``mean_c |x|^p`` → [B, H, W]."""
        return x.abs().pow(self.p).mean(dim=1)

    def forward(self, student, teacher):
        name = type(self).__name__
        _check_dims(name, student, 'student', (4, ))
        _check_dims(name, teacher, 'teacher', (4, ))
        _check_same_batch(name, student, teacher)
        a_s = self.attention_map(student)
        a_t = self.attention_map(teacher.detach())
        if a_s.shape[-2:] != a_t.shape[-2:]:
            a_s = F.interpolate(a_s.unsqueeze(1), size=a_t.shape[-2:], mode='bilinear',
                                align_corners=False).squeeze(1)
        q_s = F.normalize(a_s.flatten(1), p=2, dim=1)
        q_t = F.normalize(a_t.flatten(1), p=2, dim=1)
        return self.loss_weight * (q_s - q_t).pow(2).mean()


@MODELS.register_module()
class RelationalKDLoss(_WeightedLoss):
    """Relational KD (Park et al. 2019) on pooled features: distance-wise + angle-wise terms.

    Features are globally average-pooled when 4-D, giving ``e_1..e_B`` (student and teacher may
    have different widths). With ``d_ij = ||e_i - e_j||_2``:

    * distance-wise: ``D = d / mu`` where ``mu`` is the mean of the B(B-1) off-diagonal entries
      ``d_ij, i != j`` (the paper's "mean of the non-zero distances" whenever no two samples
      coincide; ``mu`` is bounded below by ``eps``, and taken as ``eps`` when B = 1);
      ``L_d = mean over all B×B entries of smooth_l1(D_s - D_t)`` (the zero diagonal included).
    * angle-wise: ``u_ij = (e_i - e_j) / ||e_i - e_j||`` (the zero vector when ``e_i = e_j``) and
      ``A_ijk = <u_ij, u_kj>``, the cosine of the angle at ``e_j``;
      ``L_a = mean over all B×B×B entries of smooth_l1(A_s - A_t)`` (degenerate triplets, where
      ``i = j`` or ``k = j``, are 0 on both sides).

    ``smooth_l1`` is the Huber function with beta 1. Averaging over the full B×B and B×B×B
    tensors is the convention of the authors' code (and RepFusion's), with which the weights 25
    and 50 are used. Memory: the angle term holds a [B, B, D] and a [B, B, B] tensor.
    ``loss = loss_weight * (distance_weight * L_d + angle_weight * L_a)``; B = 1 and B = 2 give
    finite values (0 for B = 1; for B = 2 the angle term is 0, as every angle is degenerate).

    Args:
        distance_weight (float): weight of the distance-wise term.
        angle_weight (float): weight of the angle-wise term.
        loss_weight (float): multiplier of the total.
        eps (float): floor of squared distances and of ``mu`` (keeps gradients finite).
    """

    def __init__(self, distance_weight=25.0, angle_weight=50.0, loss_weight=1.0, eps=1e-12):
        super().__init__(loss_weight)
        self.distance_weight = float(distance_weight)
        self.angle_weight = float(angle_weight)
        self.eps = eps

    def extra_repr(self):
        return (f'distance_weight={self.distance_weight}, angle_weight={self.angle_weight}, '
                f'loss_weight={self.loss_weight}')

    def _embed(self, x, role):
        name = type(self).__name__
        _check_dims(name, x, role, (2, 4))
        e = _global_pool(x)
        return e.float() if e.dtype in (torch.float16, torch.bfloat16) else e

    def normalised_distances(self, e):
        """[B, D] → [B, B] Euclidean distances divided by their off-diagonal mean."""
        b = e.shape[0]
        diff = e.unsqueeze(1) - e.unsqueeze(0)  # [B, B, D]: e_i - e_j
        off_diag = ~torch.eye(b, dtype=torch.bool, device=e.device)
        dist = diff.pow(2).sum(-1).clamp_min(self.eps).sqrt() * off_diag
        mean = dist.sum() / max(b * (b - 1), 1)
        return dist / mean.clamp_min(self.eps)

    def angles(self, e):
        """[B, D] → [B, B, B] with entry [j, i, k] = cos of the angle (e_i, e_j, e_k) at e_j."""
        units = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)  # [j, i] = u_ij
        return torch.bmm(units, units.transpose(1, 2))

    def forward(self, student, teacher):
        s = self._embed(student, 'student')
        with torch.no_grad():
            t = self._embed(teacher.detach(), 'teacher')
        _check_same_batch(type(self).__name__, s, t)
        with torch.no_grad():
            d_t, a_t = self.normalised_distances(t), self.angles(t)
        loss_d = F.smooth_l1_loss(self.normalised_distances(s), d_t)
        loss_a = F.smooth_l1_loss(self.angles(s), a_t)
        loss = self.distance_weight * loss_d + self.angle_weight * loss_a
        return self.loss_weight * loss.to(student.dtype)


@MODELS.register_module()
class LogitKDLoss(_WeightedLoss):
    """Hinton et al.'s knowledge distillation on logits [B, K].

    ``p_t = softmax(teacher / T)``, ``p_s = softmax(student / T)``,
    ``loss = loss_weight * T^2 * (1/B) * sum_{b,k} p_t[b,k] * (log p_t[b,k] - log p_s[b,k])``,
    i.e. ``KL(p_t || p_s)`` with batch-mean reduction, scaled by ``T^2`` so that its gradients keep
    their size as ``T`` changes.

    Args:
        temperature (float): softmax temperature ``T``.
        loss_weight (float): multiplier of the loss.
    """

    def __init__(self, temperature=4.0, loss_weight=1.0):
        super().__init__(loss_weight)
        if temperature <= 0:
            raise ValueError(f'LogitKDLoss: temperature must be > 0, got {temperature}.')
        self.temperature = float(temperature)

    def extra_repr(self):
        return f'temperature={self.temperature}, loss_weight={self.loss_weight}'

    def forward(self, student, teacher):
        name = type(self).__name__
        teacher = teacher.detach()
        _check_dims(name, student, 'student logits', (2, ))
        _check_same_shape(name, student, teacher, hint='')
        temp = self.temperature
        log_p_s = F.log_softmax(student / temp, dim=1)
        log_p_t = F.log_softmax(teacher / temp, dim=1)
        kl = F.kl_div(log_p_s, log_p_t, reduction='batchmean', log_target=True)
        return self.loss_weight * temp**2 * kl
