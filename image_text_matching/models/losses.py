"""Training losses of image-text matching by prompt learning: DSD's margin ranking loss with the
hardest negative (and its unused cross-entropy variant) over candidate scores, and
Diffusion-ITM's hard-negative denoising loss over per-candidate noise predictions.

The one rule: every loss takes the index of the correct candidate (``target``); none assumes the
positive is candidate 0 (DSD's released loss overwrites the index with 0, which only works because
its data loaders always put the positive first). A loss says what it consumes in its class
attribute ``requires``: ``'scores'`` (candidate scores, higher = better match, from
``DSDScorer.score``) or ``'denoising'`` (each candidate's noise prediction and its regression
target, at one shared timestep and noise draw). Losses compute in float32 (float64 stays float64)
and return a scalar already multiplied by ``loss_weight``.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.registry import MODELS

__all__ = ['MarginRankingLoss', 'CandidateCELoss', 'HardNegativeITMLoss']


def _float(x):
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _scores_and_targets(who, scores, target):
    """``scores`` as ``[B, n]`` float and ``target`` as ``[B]`` long, checked."""
    if not torch.is_tensor(scores) or scores.dim() not in (1, 2):
        raise ValueError(f'{who}: scores must be a [n] or [B, n] tensor of candidate scores; got '
                         f'{tuple(scores.shape) if torch.is_tensor(scores) else type(scores)}.')
    scores = _float(scores if scores.dim() == 2 else scores[None])
    target = torch.as_tensor(target, device=scores.device).reshape(-1).long()
    batch, n = scores.shape
    if n < 2:
        raise ValueError(f'{who}: a ranking loss needs at least 2 candidates (a positive and a '
                         f'negative); got {n}.')
    if target.numel() != batch or bool(((target < 0) | (target >= n)).any()):
        raise ValueError(f'{who}: target must hold one candidate index in [0, {n}) per row of '
                         f'the {batch} x {n} scores; got {target.tolist()}.')
    return scores, target


def _check_positive(who, name, value, allow_zero=False):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or \
            value < 0 or (value == 0 and not allow_zero):
        kind = 'non-negative' if allow_zero else 'positive'
        raise ValueError(f'{who}: {name}={value!r} must be a {kind} number.')
    return float(value)


@MODELS.register_module()
class MarginRankingLoss(nn.Module):
    """DSD's hinge: ``mean(clamp(max_neg - pos + margin, min=0))`` over the questions.

    ``max_neg`` is the hardest (highest-scoring) negative of each question, ``pos`` the score of
    the candidate at ``target``.
    """

    requires = 'scores'

    def __init__(self, margin=0.1, loss_weight=1.0):
        super().__init__()
        self.margin = _check_positive('MarginRankingLoss', 'margin', margin, allow_zero=True)
        self.loss_weight = float(loss_weight)

    def forward(self, scores, target):
        scores, target = _scores_and_targets('MarginRankingLoss', scores, target)
        positive = scores.gather(1, target[:, None])[:, 0]
        is_target = F.one_hot(target, scores.shape[1]).bool()
        hardest = scores.masked_fill(is_target, float('-inf')).amax(dim=1)
        return self.loss_weight * torch.clamp(hardest - positive + self.margin, min=0).mean()


@MODELS.register_module()
class CandidateCELoss(nn.Module):
    """Cross-entropy of the softmax over candidates (scores / temperature) at ``target``; the
    variant DSD's code defines but never uses."""

    requires = 'scores'

    def __init__(self, temperature=1.0, loss_weight=1.0):
        super().__init__()
        self.temperature = _check_positive('CandidateCELoss', 'temperature', temperature)
        self.loss_weight = float(loss_weight)

    def forward(self, scores, target):
        scores, target = _scores_and_targets('CandidateCELoss', scores, target)
        return self.loss_weight * F.cross_entropy(scores / self.temperature, target)


@MODELS.register_module()
class HardNegativeITMLoss(nn.Module):
    """Diffusion-ITM's hard-negative fine-tuning loss on one question.

    ``L = MSE(pred[target], goal[target]) - mean_j clamp(L_neg_j, max=f * L_pos.detach())`` over
    the negatives ``j``, with ``L_neg_j = MSE(pred[j], goal[j])`` (the negative's own denoising
    error, to be raised) or, ``relativistic=True``, ``MSE(pred[j], pred[target])`` (distance from
    the positive's prediction). The clamp (``f = neg_loss_factor``) stops the model from winning by
    wrecking negative predictions without bound; ``unhinged=True`` removes it. With one negative
    this is the reference's loss; with several, their hinged terms are averaged.

    ``forward(predictions [n, ...], goals [n, ...] or broadcastable [...], target)``: each
    candidate's noise prediction and its regression target (the shared noise ``eps`` for
    epsilon-prediction models, whatever the candidate).
    """

    requires = 'denoising'

    def __init__(self, neg_loss_factor=1.0, relativistic=False, unhinged=False, loss_weight=1.0):
        super().__init__()
        self.neg_loss_factor = _check_positive('HardNegativeITMLoss', 'neg_loss_factor',
                                               neg_loss_factor)
        self.relativistic = bool(relativistic)
        self.unhinged = bool(unhinged)
        self.loss_weight = float(loss_weight)

    def forward(self, predictions, goals, target):
        if not torch.is_tensor(predictions) or predictions.dim() < 2 or predictions.shape[0] < 2:
            raise ValueError(
                'HardNegativeITMLoss: predictions must be [n, ...] noise predictions of n >= 2 '
                f'candidates; got {tuple(getattr(predictions, "shape", ()))}.')
        n = predictions.shape[0]
        target = int(target)
        if not 0 <= target < n:
            raise ValueError(f'HardNegativeITMLoss: target={target} is not a candidate index in '
                             f'[0, {n}).')
        predictions = _float(predictions)
        goals = _float(goals).expand_as(predictions)
        positive = F.mse_loss(predictions[target], goals[target])
        negatives = [j for j in range(n) if j != target]
        if self.relativistic:
            neg = torch.stack([F.mse_loss(predictions[j], predictions[target]) for j in negatives])
        else:
            neg = torch.stack([F.mse_loss(predictions[j], goals[j]) for j in negatives])
        if not self.unhinged:
            neg = torch.clamp(neg, max=self.neg_loss_factor * positive.detach())
        return self.loss_weight * (positive - neg.mean())
