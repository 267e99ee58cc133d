"""IoULoss: the three modes by hand, eps for disjoint boxes, weights and avg_factor, torchvision.

pred [0, 0, 10, 10] against target [5, 0, 15, 10]: intersection 5 x 10 = 50, union 150,
IoU 1/3 -> linear 2/3, square 1 - 1/9 = 8/9, log ln 3 = 1.0986123. An identical pair has
IoU 1 and zero loss in every mode; a disjoint pair has IoU clamped to eps = 1e-6 -> log loss
-ln(1e-6) = 13.815511.
"""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import box_iou

from detcli.config.loader import validate_tree
from detcli.errors import ConfigError
from detcli.models.losses import IoULoss, IoULossConfig
from detcli.models.losses.iou_loss import iou_loss
from detcli.registry import LOSSES

PRED = torch.tensor([[0.0, 0.0, 10.0, 10.0], [2.0, 2.0, 6.0, 8.0], [0.0, 0.0, 1.0, 1.0]])
TARGET = torch.tensor([[5.0, 0.0, 15.0, 10.0], [2.0, 2.0, 6.0, 8.0], [5.0, 5.0, 6.0, 6.0]])
LOG_EPS = -math.log(1e-6)


@pytest.mark.parametrize("mode, expected", [
    ("linear", [2 / 3, 0.0, 1 - 1e-6]),
    ("square", [8 / 9, 0.0, 1 - 1e-12]),
    ("log", [math.log(3), 0.0, LOG_EPS]),
])
def test_each_mode_by_hand(mode, expected):
    loss = IoULoss(mode=mode, reduction="none")(PRED, TARGET)
    torch.testing.assert_close(loss, torch.tensor(expected), rtol=1e-5, atol=1e-6)


def test_mean_with_weights_and_avg_factor():
    weight = torch.tensor([2.0, 1.0, 0.0])  # the disjoint pair does not count
    loss = IoULoss(mode="linear", loss_weight=3.0)(PRED, TARGET, weight, avg_factor=4.0)
    torch.testing.assert_close(loss, torch.tensor(3.0 * (2 * 2 / 3) / 4.0))
    # a (M, 4) weight is averaged over its last axis, as MMDetection does
    wide = weight[:, None].expand(-1, 4)
    torch.testing.assert_close(IoULoss(mode="linear")(PRED, TARGET, wide, avg_factor=4.0),
                               torch.tensor((2 * 2 / 3) / 4.0))
    assert IoULoss()(PRED, TARGET, reduction_override="sum") == pytest.approx(
        math.log(3) + LOG_EPS, rel=1e-5)


def test_matches_torchvision_iou_on_random_boxes():
    generator = torch.Generator().manual_seed(0)
    xy = torch.rand(20, 2, generator=generator) * 50
    pred = torch.cat([xy, xy + 1 + torch.rand(20, 2, generator=generator) * 30], dim=1)
    target = pred + torch.randn(20, 4, generator=generator) * 3
    target[:, 2:] = torch.maximum(target[:, 2:], target[:, :2] + 1)
    iou = box_iou(pred, target).diagonal().clamp(min=1e-6)  # (M,)
    torch.testing.assert_close(iou_loss(pred, target, "log"), -iou.log(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(iou_loss(pred, target, "square"), 1 - iou ** 2)


def test_half_inputs_give_a_float32_loss_with_gradients():
    pred = PRED[:2].clone().half().requires_grad_()
    loss = IoULoss()(pred, TARGET[:2].half())
    assert loss.dtype == torch.float32
    loss.backward()
    assert pred.grad is not None and bool(torch.isfinite(pred.grad).all())


def test_config_defaults_deprecated_linear_and_bad_mode():
    loss = LOSSES.build(IoULossConfig())
    assert (loss.mode, loss.eps, loss.loss_weight) == ("log", 1e-6, 1.0)
    assert LOSSES.build(IoULossConfig(linear=True)).mode == "linear"
    with pytest.raises(ConfigError, match="mode"):
        validate_tree({"type": "IoULoss", "mode": "cubic"}, IoULossConfig)
