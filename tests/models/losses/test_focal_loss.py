"""Sigmoid focal loss on a written-out 2x3 input; weight, avg_factor, reductions, background label."""

import math

import pytest
import torch
from pydantic import ValidationError
from torchvision.ops import sigmoid_focal_loss

from detcli.models.losses import FocalLoss, FocalLossConfig
from detcli.registry import LOSSES

LN2, LN3, LN4_3 = math.log(2), math.log(3), math.log(4 / 3)
# sigmoid(0) = 1/2, sigmoid(ln 3) = 3/4, sigmoid(-ln 3) = 1/4: every term below is exact.
PRED = torch.tensor([[0.0, LN3, -LN3],
                     [LN3, -LN3, 0.0]])  # (M=2, K=3)
LABELS = torch.tensor([1, 3])  # sample 0 is class 1; sample 1 is background (label K = 3)
# alpha 0.25, gamma 2.  Positive: -a (1-p)^2 ln p.  Negative: -(1-a) p^2 ln(1-p).
EXPECTED = torch.tensor([
    [0.75 * 0.25 * LN2,            # t=0, p=1/2: 0.75 * 1/4 * ln 2
     0.25 * (1 / 16) * LN4_3,      # t=1, p=3/4: 0.25 * 1/16 * ln 4/3
     0.75 * (1 / 16) * LN4_3],     # t=0, p=1/4: 0.75 * 1/16 * ln 4/3
    [0.75 * (9 / 16) * 2 * LN2,    # t=0, p=3/4: 0.75 * 9/16 * ln 4
     0.75 * (1 / 16) * LN4_3,      # t=0, p=1/4
     0.75 * 0.25 * LN2],           # t=0, p=1/2
])
TOTAL = 0.8762383529818469  # EXPECTED.sum(), written out


def test_elementwise_loss_matches_the_formula_and_torchvision():
    loss = FocalLoss(reduction="none")(PRED, LABELS)
    torch.testing.assert_close(loss, EXPECTED)
    one_hot = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(loss, sigmoid_focal_loss(PRED, one_hot, reduction="none"))
    torch.testing.assert_close(FocalLoss(reduction="none")(PRED, one_hot), EXPECTED)  # (M, K) target


def test_reductions_and_avg_factor():
    focal = FocalLoss()
    assert focal(PRED, LABELS, reduction_override="sum").item() == pytest.approx(TOTAL)
    assert focal(PRED, LABELS).item() == pytest.approx(TOTAL / 6)  # mean over M * K = 6 elements
    assert focal(PRED, LABELS, avg_factor=1).item() == pytest.approx(TOTAL)  # sum / num positives
    assert focal(PRED, LABELS, avg_factor=torch.tensor(4.0)).item() == pytest.approx(TOTAL / 4)
    with pytest.raises(ValueError, match="avg_factor cannot be used with reduction=\"sum\""):
        focal(PRED, LABELS, avg_factor=2, reduction_override="sum")


def test_per_sample_weight_and_loss_weight():
    loss = FocalLoss(reduction="sum", loss_weight=2.0)(PRED, LABELS, weight=torch.tensor([1.0, 0.0]))
    assert loss.item() == pytest.approx(2.0 * EXPECTED[0].sum().item())


def test_background_and_out_of_range_labels_are_all_negative():
    bg = FocalLoss(reduction="none")(PRED[1:], torch.tensor([3]))
    alpha_zero = FocalLoss(alpha=0.0, reduction="sum")  # alpha 0 leaves only negative terms
    assert alpha_zero(PRED[1:], torch.tensor([3])).item() == pytest.approx(EXPECTED[1].sum().item() / 0.75)
    torch.testing.assert_close(bg, EXPECTED[1:])


def test_empty_input_gives_zero_with_grad():
    pred = torch.zeros(0, 3, requires_grad=True)
    for avg_factor in (None, 0.0):
        loss = FocalLoss()(pred, torch.zeros(0, dtype=torch.long), avg_factor=avg_factor)
        assert loss.item() == 0.0 and loss.grad_fn is not None
        loss.backward()
    assert pred.grad is not None and pred.grad.shape == (0, 3)


def test_computes_in_float32_under_autocast():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = FocalLoss(reduction="sum")(PRED.to(torch.bfloat16), LABELS)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(TOTAL, rel=1e-2)  # bf16 inputs: ~3 significant digits


def test_config_builds_and_rejects_softmax():
    loss = LOSSES.build(FocalLossConfig(gamma=1.0, alpha=0.5, loss_weight=3.0))
    assert isinstance(loss, FocalLoss) and loss.use_sigmoid
    assert (loss.gamma, loss.alpha, loss.loss_weight) == (1.0, 0.5, 3.0)
    with pytest.raises(ValidationError, match="supports only use_sigmoid = true"):
        FocalLossConfig(use_sigmoid=False)
    with pytest.raises(ValidationError):
        FocalLossConfig(alpha=1.5)
    with pytest.raises(ValidationError):
        FocalLossConfig(reduction="avg")
