"""Box regression losses: L1, smooth L1 (on deltas or boxes) and GIoU (on boxes).

M samples (positive priors), D values per sample (4).

``L1Loss`` and ``SmoothL1Loss`` compare ``pred`` and ``target`` of the same shape (M, D)
element-wise; ``weight`` is (M, D) or per sample (M,). Smooth L1 with ``beta``:
``0.5 * d**2 / beta`` where ``|d| < beta``, else ``|d| - 0.5 * beta``.

``GIoULoss`` takes ``pred`` and ``target`` boxes (M, 4) as (x1, y1, x2, y2) in absolute pixels
and gives ``1 - GIoU`` per pair (M,): 0 for identical boxes, up to 2 for far-apart ones.
A (M, 4) ``weight`` is averaged over its last axis (as MMDetection does).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from detcli.config.schema import Schema
from detcli.models.losses.utils import Reduction, WeightedLoss, per_sample_weight
from detcli.registry import LOSSES


def _check_same_shape(name: str, pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"{name}: pred shape {tuple(pred.shape)} differs from target shape "
                         f"{tuple(target.shape)}")


def generalized_box_iou_loss(boxes1: Tensor, boxes2: Tensor, eps: float) -> Tensor:
    """``1 - GIoU`` of aligned pairs (M, 4), (M, 4) -> (M,), unreduced.

    The arithmetic of torchvision's ``generalized_box_iou_loss`` (same values and gradients),
    with the empty intersections zeroed by ``torch.where`` instead of boolean-mask indexing,
    which needs a host sync on CUDA (the mask's count decides a shape).
    """
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)  # (M,) each
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    xkis1, ykis1 = torch.max(x1, x1g), torch.max(y1, y1g)  # intersection corners
    xkis2, ykis2 = torch.min(x2, x2g), torch.min(y2, y2g)
    overlaps = (ykis2 > ykis1) & (xkis2 > xkis1)  # (M,)
    inter = torch.where(overlaps, (xkis2 - xkis1) * (ykis2 - ykis1), 0.0)  # (M,)
    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - inter
    iou = inter / (union + eps)
    xc1, yc1 = torch.min(x1, x1g), torch.min(y1, y1g)  # smallest enclosing box
    xc2, yc2 = torch.max(x2, x2g), torch.max(y2, y2g)
    area_c = (xc2 - xc1) * (yc2 - yc1)
    return 1 - (iou - ((area_c - union) / (area_c + eps)))


class L1LossConfig(Schema):
    type: Literal["L1Loss"] = "L1Loss"
    reduction: Reduction = "mean"
    loss_weight: float = Field(1.0, ge=0)


@LOSSES.register(L1LossConfig)
class L1Loss(WeightedLoss):
    """``|pred - target|`` element-wise."""

    def elementwise(self, pred: Tensor, target: Tensor,
                    weight: Tensor | None) -> tuple[Tensor, Tensor | None]:
        _check_same_shape("L1Loss", pred, target)
        loss = (pred - target.float()).abs()  # (M, D)
        return loss, per_sample_weight(weight, loss)


class SmoothL1LossConfig(Schema):
    type: Literal["SmoothL1Loss"] = "SmoothL1Loss"
    beta: float = Field(1.0, gt=0)
    reduction: Reduction = "mean"
    loss_weight: float = Field(1.0, ge=0)


@LOSSES.register(SmoothL1LossConfig)
class SmoothL1Loss(WeightedLoss):
    """Quadratic below ``beta``, linear above (Huber loss divided by ``beta``)."""

    def __init__(self, *, beta: float = 1.0, reduction: Reduction = "mean",
                 loss_weight: float = 1.0) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        self.beta = beta

    def elementwise(self, pred: Tensor, target: Tensor,
                    weight: Tensor | None) -> tuple[Tensor, Tensor | None]:
        _check_same_shape("SmoothL1Loss", pred, target)
        loss = F.smooth_l1_loss(pred, target.float(), reduction="none", beta=self.beta)  # (M, D)
        return loss, per_sample_weight(weight, loss)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, " + super().extra_repr()


class GIoULossConfig(Schema):
    type: Literal["GIoULoss"] = "GIoULoss"
    eps: float = Field(1e-6, gt=0)
    reduction: Reduction = "mean"
    loss_weight: float = Field(1.0, ge=0)


@LOSSES.register(GIoULossConfig)
class GIoULoss(WeightedLoss):
    """``1 - GIoU(pred, target)`` for aligned box pairs (M, 4) -> (M,)."""

    def __init__(self, *, eps: float = 1e-6, reduction: Reduction = "mean",
                 loss_weight: float = 1.0) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        self.eps = eps

    def elementwise(self, pred: Tensor, target: Tensor,
                    weight: Tensor | None) -> tuple[Tensor, Tensor | None]:
        _check_same_shape("GIoULoss", pred, target)
        loss = generalized_box_iou_loss(pred, target.float(), self.eps)  # (M,)
        if weight is not None and weight.dim() == 2:
            weight = weight.float().mean(dim=-1)  # (M, 4) -> (M,)
        return loss, None if weight is None else weight.float()

    def extra_repr(self) -> str:
        return f"eps={self.eps}, " + super().extra_repr()
