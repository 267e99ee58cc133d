"""QualityFocalLoss and DistributionFocalLoss on inputs whose values are worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from detcli.errors import ConfigError
from detcli.models.losses.gfocal_loss import (
    DistributionFocalLoss,
    QualityFocalLoss,
    QualityFocalLossConfig,
)

LN3 = math.log(3.0)


def test_quality_focal_loss_known_values():
    # sample 0: logits (0, 0), soft target (0.5, 0): BCE(0.5, 0.5) * |0.5 - 0.5|^2 = 0, then
    #           BCE(0.5, 0) * 0.5^2 = ln 2 / 4                               -> 0.173287
    # sample 1: logits (ln 3, 0) (p = 0.75), target (1, 0): -ln 0.75 * 0.25^2 = 0.017980,
    #           plus ln 2 / 4                                                -> 0.191267
    pred = torch.tensor([[0.0, 0.0], [LN3, 0.0]])
    target = torch.tensor([[0.5, 0.0], [1.0, 0.0]])
    per_sample = [math.log(2) / 4, -math.log(0.75) * 0.0625 + math.log(2) / 4]
    loss = QualityFocalLoss(reduction="none")
    torch.testing.assert_close(loss(pred, target), torch.tensor(per_sample))
    weighted = QualityFocalLoss(loss_weight=2.0)(pred, target, weight=torch.tensor([1.0, 2.0]),
                                                 avg_factor=2.0)
    assert weighted.item() == pytest.approx(2.0 * (per_sample[0] + 2 * per_sample[1]) / 2.0,
                                            rel=1e-6)


def test_quality_focal_loss_beta_and_probabilities():
    pred = torch.tensor([[LN3]])  # p = 0.75, target 0: -ln 0.25 * 0.75 ** beta
    for beta in (0.0, 1.0, 2.0):
        value = QualityFocalLoss(beta=beta)(pred, torch.zeros(1, 1)).item()
        assert value == pytest.approx(-math.log(0.25) * 0.75 ** beta, rel=1e-6)
    activated = QualityFocalLoss(activated=True)(torch.tensor([[0.75]]), torch.zeros(1, 1))
    assert activated.item() == pytest.approx(-math.log(0.25) * 0.75 ** 2, rel=1e-5)


def test_quality_focal_loss_gradient_flows_and_shapes_are_checked():
    pred = torch.zeros(3, 2, requires_grad=True)
    QualityFocalLoss()(pred, torch.tensor([[0.9, 0], [0, 0], [0, 0.2]])).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="soft target"):
        QualityFocalLoss()(torch.zeros(2, 3), torch.zeros(2))
    with pytest.raises(ValueError, match="use_sigmoid"):
        QualityFocalLossConfig(use_sigmoid=False)
    with pytest.raises(ConfigError, match="use_sigmoid"):
        QualityFocalLoss(use_sigmoid=False)


def test_distribution_focal_loss_known_values():
    # uniform over 3 bins, target 0.25: ln 3 * (0.75 + 0.25) = ln 3
    # bins with probabilities (1/4, 3/4), target 0.5: 0.5 * ln 4 + 0.5 * -ln 0.75
    pred = torch.tensor([[0.0, 0.0, 0.0], [0.0, LN3, -1e4]])
    target = torch.tensor([0.25, 0.5])
    expected = [LN3, 0.5 * math.log(4) - 0.5 * math.log(0.75)]
    torch.testing.assert_close(DistributionFocalLoss(reduction="none")(pred, target),
                               torch.tensor(expected))
    assert DistributionFocalLoss()(pred, target).item() == pytest.approx(sum(expected) / 2)
