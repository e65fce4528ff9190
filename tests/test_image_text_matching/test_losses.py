"""Prompt-learning losses against hand-computed values."""
import math

import pytest
import torch
from mmengine.registry import MODELS

from image_text_matching.models.losses import (CandidateCELoss, HardNegativeITMLoss,
                                               MarginRankingLoss)


def test_margin_ranking_uses_the_hardest_negative_and_the_target_index():
    scores = torch.tensor([[0.5, 0.7, 0.2], [0.9, 0.1, 0.3]], requires_grad=True)
    loss = MarginRankingLoss(margin=0.1)(scores, torch.tensor([2, 0]))
    # row 0: positive 0.2, hardest negative 0.7 -> 0.7 - 0.2 + 0.1 = 0.6
    # row 1: positive 0.9, hardest negative 0.3 -> 0.3 - 0.9 + 0.1 < 0 -> 0
    assert loss.item() == pytest.approx(0.3)
    loss.backward()
    assert torch.allclose(scores.grad, torch.tensor([[0.0, 0.5, -0.5], [0.0, 0.0, 0.0]]))
    # the reference's fixed index 0 would rank row 0 against 0.5 instead: 0.7 - 0.5 + 0.1
    assert MarginRankingLoss(0.1)(scores[0].detach(), 0).item() == pytest.approx(0.3)
    assert MarginRankingLoss(0.1)(scores[0].detach(), 2).item() == pytest.approx(0.6)
    built = MODELS.build(dict(type='MarginRankingLoss', margin=0.25))
    assert built(torch.tensor([1.0, 0.9]), 0).item() == pytest.approx(0.15)


def test_candidate_ce_is_the_softmax_cross_entropy_at_the_target():
    loss = CandidateCELoss(temperature=0.5)(torch.tensor([1.0, 2.0, 0.0]), 1)
    # logits 2, 4, 0; -log softmax at index 1 = log(1 + e^-2 + e^-4)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-2) + math.exp(-4)), rel=1e-6)


def test_ranking_losses_refuse_bad_targets():
    with pytest.raises(ValueError, match=r'target must hold one candidate index in \[0, 3\) per '
                                         r'row of the 1 x 3 scores; got \[3\]'):
        MarginRankingLoss()(torch.zeros(3), 3)
    with pytest.raises(ValueError, match='needs at least 2 candidates'):
        CandidateCELoss()(torch.zeros(1, 1), 0)


def test_hard_negative_itm_loss_hand_computed():
    goal = torch.zeros(1, 2)  # the shared noise
    predictions = torch.tensor([[[1.0, 1.0]], [[3.0, 1.0]], [[0.5, -0.5]]], requires_grad=True)
    # MSE to the goal: 1, 5, 0.25; to the positive's prediction: -, 2, 1.25
    assert HardNegativeITMLoss()(predictions, goal, 0).item() == pytest.approx(1 - (1 + 0.25) / 2)
    assert HardNegativeITMLoss(neg_loss_factor=0.5)(predictions, goal, 0).item() == \
        pytest.approx(1 - (0.5 + 0.25) / 2)
    assert HardNegativeITMLoss(unhinged=True)(predictions, goal, 0).item() == \
        pytest.approx(1 - (5 + 0.25) / 2)
    assert HardNegativeITMLoss(relativistic=True)(predictions, goal, 0).item() == \
        pytest.approx(1 - (1 + 1) / 2)
    assert HardNegativeITMLoss(relativistic=True, unhinged=True)(predictions, goal, 0).item() == \
        pytest.approx(1 - (2 + 1.25) / 2)
    assert HardNegativeITMLoss()(predictions, goal, 1).item() == pytest.approx(5 - (1 + 0.25) / 2)
    loss = HardNegativeITMLoss()(predictions, goal.expand(3, 1, 2), 0)
    loss.backward()
    # the clamped negative (5 -> 1) passes no gradient; d MSE / d pred = 2 (pred - goal) / 2
    assert torch.allclose(predictions.grad, torch.tensor([[[1.0, 1.0]], [[0.0, 0.0]],
                                                          [[-0.25, 0.25]]]))
