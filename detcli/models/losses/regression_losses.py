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

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor
from torchvision.ops import generalized_box_iou_loss

from detcli.config.schema import Schema
from detcli.models.losses.utils import Reduction, WeightedLoss, per_sample_weight
from detcli.registry import LOSSES


def _check_same_shape(name: str, pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"{name}: pred shape {tuple(pred.shape)} differs from target shape "
                         f"{tuple(target.shape)}")


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
        if beta <= 0:
            raise ValueError(f"SmoothL1Loss beta must be > 0, got {beta}")
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
        loss = generalized_box_iou_loss(pred, target.float(), reduction="none", eps=self.eps)  # (M,)
        if weight is not None and weight.dim() == 2:
            weight = weight.float().mean(dim=-1)  # (M, 4) -> (M,)
        return loss, None if weight is None else weight.float()

    def extra_repr(self) -> str:
        return f"eps={self.eps}, " + super().extra_repr()
