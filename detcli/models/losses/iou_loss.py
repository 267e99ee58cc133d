"""IoU loss (Yu et al. 2016, UnitBox; FCOS's box loss), MMDetection 2.x semantics.

M samples (positive points or priors).

``pred`` and ``target`` are aligned boxes (M, 4) as (x1, y1, x2, y2) in absolute pixels. With
``iou = IoU(pred, target).clamp(min=eps)`` (the union clamped to ``eps`` too, so empty boxes
give ``eps`` and no NaN), the element-wise loss (M,) is

    mode "linear":  1 - iou
    mode "square":  1 - iou ** 2
    mode "log":     -log(iou)        (the default: UnitBox and FCOS)

A (M, 4) ``weight`` is averaged over its last axis, as MMDetection does. The deprecated
``linear = true`` of old MMDetection configs means ``mode = "linear"``.
"""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import Field
from torch import Tensor

from detcli.config.schema import Schema
from detcli.errors import ConfigError
from detcli.models.losses.utils import Reduction, WeightedLoss
from detcli.ops.boxes import aligned_box_iou
from detcli.registry import LOSSES

log = logging.getLogger(__name__)

IoUMode = Literal["linear", "square", "log"]
MODES: tuple[str, ...] = ("linear", "square", "log")


def iou_loss(pred: Tensor, target: Tensor, mode: IoUMode = "log", eps: float = 1e-6) -> Tensor:
    """Element-wise IoU loss of aligned boxes: (M, 4), (M, 4) -> (M,) float32."""
    iou = aligned_box_iou(pred, target, eps=eps).clamp(min=eps)  # (M,)
    if mode == "linear":
        return 1 - iou
    if mode == "square":
        return 1 - iou ** 2
    if mode == "log":
        return -iou.log()
    raise ConfigError(f"IoULoss mode {mode!r} is not one of {', '.join(MODES)}")


class IoULossConfig(Schema):
    type: Literal["IoULoss"] = "IoULoss"
    linear: bool = False  # deprecated: true means mode = "linear"
    mode: IoUMode = "log"
    eps: float = Field(1e-6, gt=0)
    reduction: Reduction = "mean"
    loss_weight: float = Field(1.0, ge=0)


@LOSSES.register(IoULossConfig)
class IoULoss(WeightedLoss):
    """``iou_loss`` of aligned box pairs (M, 4) -> (M,); ``forward`` as :class:`WeightedLoss`."""

    def __init__(self, *, linear: bool = False, mode: IoUMode = "log", eps: float = 1e-6,
                 reduction: Reduction = "mean", loss_weight: float = 1.0) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        if linear:
            log.warning("IoULoss: `linear = true` is deprecated; use mode = \"linear\"")
            mode = "linear"
        self.mode: IoUMode = mode
        self.eps = eps

    def elementwise(self, pred: Tensor, target: Tensor,
                    weight: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if pred.shape != target.shape:
            raise ValueError(f"IoULoss: pred shape {tuple(pred.shape)} differs from target "
                             f"shape {tuple(target.shape)}")
        loss = iou_loss(pred, target, self.mode, self.eps)  # (M,)
        if weight is not None and weight.dim() == 2:
            weight = weight.float().mean(dim=-1)  # (M, 4) -> (M,)
        return loss, None if weight is None else weight.float()

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, eps={self.eps}, " + super().extra_repr()
