"""L1, smooth L1 (with beta) and GIoU losses on written-out numbers; empty inputs."""

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torchvision.ops import generalized_box_iou_loss

from detcli.models.losses import GIoULoss, L1Loss, SmoothL1Loss, SmoothL1LossConfig
from detcli.registry import LOSSES

PRED = torch.tensor([[0.0, 1.0], [2.0, 3.5]])
TARGET = torch.tensor([[0.5, 1.0], [0.0, 3.0]])  # |d| = 0.5, 0, 2, 0.5


def test_l1_reductions_and_weights():
    l1 = L1Loss()
    torch.testing.assert_close(l1(PRED, TARGET, reduction_override="none"),
                               torch.tensor([[0.5, 0.0], [2.0, 0.5]]))
    assert l1(PRED, TARGET).item() == pytest.approx(0.75)  # 3 / 4
    assert l1(PRED, TARGET, reduction_override="sum").item() == pytest.approx(3.0)
    assert l1(PRED, TARGET, avg_factor=2).item() == pytest.approx(1.5)
    assert l1(PRED, TARGET, weight=torch.tensor([1.0, 0.0]), reduction_override="sum").item() == 0.5
    elementwise = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert L1Loss(loss_weight=2.0)(PRED, TARGET, weight=elementwise, reduction_override="sum").item() == 4.0


def test_smooth_l1_quadratic_below_beta_linear_above():
    # beta 1: 0.5 -> 0.5 * 0.25 = 0.125; 0 -> 0; 2 -> 2 - 0.5 = 1.5; 0.5 -> 0.125
    torch.testing.assert_close(SmoothL1Loss(reduction="none")(PRED, TARGET),
                               torch.tensor([[0.125, 0.0], [1.5, 0.125]]))
    # beta 3: everything quadratic, 0.5 d^2 / 3: 0.25/6, 0, 4/6, 0.25/6
    torch.testing.assert_close(SmoothL1Loss(beta=3.0, reduction="none")(PRED, TARGET),
                               torch.tensor([[0.25 / 6, 0.0], [4 / 6, 0.25 / 6]]))
    # beta 0.25: everything linear, d - 0.125: 0.375, 0, 1.875, 0.375 -> sum 2.625
    assert SmoothL1Loss(beta=0.25, reduction="sum")(PRED, TARGET).item() == pytest.approx(2.625)
    assert SmoothL1Loss()(PRED, TARGET).item() == pytest.approx(F.smooth_l1_loss(PRED, TARGET).item())


def test_smooth_l1_config_requires_positive_beta():
    assert LOSSES.build(SmoothL1LossConfig(beta=0.11)).beta == 0.11
    with pytest.raises(ValidationError):
        SmoothL1LossConfig(beta=0.0)


BOXES_PRED = torch.tensor([[0.0, 0.0, 2.0, 2.0],    # identical to its target
                           [0.0, 0.0, 1.0, 1.0],    # disjoint from [2, 2, 3, 3]
                           [0.0, 0.0, 2.0, 2.0]])   # overlaps [1, 1, 3, 3] by a unit square
BOXES_TARGET = torch.tensor([[0.0, 0.0, 2.0, 2.0],
                             [2.0, 2.0, 3.0, 3.0],
                             [1.0, 1.0, 3.0, 3.0]])
# disjoint: IoU 0, union 2, enclosing [0, 0, 3, 3] area 9: GIoU = 0 - 7/9, loss 16/9
# overlap: IoU 1/7, enclosing area 9, union 7: GIoU = 1/7 - 2/9 = -5/63, loss 68/63
GIOU_EXPECTED = torch.tensor([0.0, 16 / 9, 68 / 63])


def test_giou_on_written_out_boxes():
    giou = GIoULoss(reduction="none")
    torch.testing.assert_close(giou(BOXES_PRED, BOXES_TARGET), GIOU_EXPECTED, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(giou(BOXES_PRED, BOXES_TARGET),
                               generalized_box_iou_loss(BOXES_PRED, BOXES_TARGET, eps=1e-6))
    mean = GIoULoss()(BOXES_PRED, BOXES_TARGET)
    assert mean.item() == pytest.approx((16 / 9 + 68 / 63) / 3, rel=1e-5)


def test_giou_box_weights_average_over_coordinates():
    weight = torch.tensor([[1.0] * 4, [0.0] * 4, [0.5, 0.5, 1.0, 0.0]])  # means 1, 0, 0.5
    loss = GIoULoss(reduction="sum", loss_weight=2.0)(BOXES_PRED, BOXES_TARGET, weight=weight)
    assert loss.item() == pytest.approx(2.0 * 0.5 * 68 / 63, rel=1e-5)


@pytest.mark.parametrize("loss", [L1Loss(), SmoothL1Loss(), GIoULoss()])
def test_empty_input_gives_zero_with_grad(loss):
    pred = torch.zeros(0, 4, requires_grad=True)
    for avg_factor in (None, 0.0):
        value = loss(pred, torch.zeros(0, 4), avg_factor=avg_factor)
        assert value.item() == 0.0 and value.grad_fn is not None
        value.backward()
    assert loss(pred, torch.zeros(0, 4), reduction_override="none").numel() == 0


def test_float32_under_autocast_and_shape_check():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = GIoULoss()(BOXES_PRED.to(torch.bfloat16), BOXES_TARGET)
    assert loss.dtype == torch.float32
    with pytest.raises(ValueError, match=r"pred shape \(2, 2\) differs from target shape \(2, 4\)"):
        L1Loss()(PRED, torch.zeros(2, 4))
