"""Sigmoid focal loss (Lin et al. 2017, RetinaNet), MMDetection 2.x semantics.

M samples (anchors), K foreground classes.

``pred`` are logits (M, K). ``target`` is either integer labels (M,) in [0, K], where ``K``
means background (every class is a negative for that sample), or a float (M, K) one-hot/soft
target. Per element, with p = sigmoid(logit), t the 0/1 target:

    p_t = p if t else 1 - p,  alpha_t = alpha if t else 1 - alpha
    loss = -alpha_t * (1 - p_t)**gamma * log(p_t)

``weight`` is per sample (M,) or per element (M, K). With ``reduction = "mean"`` the sum is
divided by ``avg_factor`` when given (RetinaNet passes the number of positive anchors).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, field_validator
from torch import Tensor
from torchvision.ops import sigmoid_focal_loss

from detcli.config.schema import Schema
from detcli.models.losses.utils import Reduction, WeightedLoss, per_sample_weight
from detcli.registry import LOSSES

SIGMOID_ONLY = ("FocalLoss supports only use_sigmoid = true (sigmoid focal loss); "
                "softmax focal loss is not implemented")


class FocalLossConfig(Schema):
    type: Literal["FocalLoss"] = "FocalLoss"
    use_sigmoid: bool = True
    gamma: float = Field(2.0, ge=0)
    alpha: float = Field(0.25, ge=0, le=1)
    reduction: Reduction = "mean"
    loss_weight: float = Field(1.0, ge=0)

    @field_validator("use_sigmoid")
    @classmethod
    def _sigmoid_only(cls, value: bool) -> bool:
        if not value:
            raise ValueError(SIGMOID_ONLY)
        return value


def labels_to_binary(labels: Tensor, num_classes: int) -> Tensor:
    """(M,) integer labels -> (M, K) float 0/1 targets; any label outside [0, K) gives a zero row."""
    classes = torch.arange(num_classes, device=labels.device)  # (K,)
    return (labels.unsqueeze(-1) == classes).float()  # (M, K)


@LOSSES.register(FocalLossConfig)
class FocalLoss(WeightedLoss):
    """Sigmoid focal loss on (M, K) logits; ``forward`` as :class:`WeightedLoss`."""

    def __init__(self, *, use_sigmoid: bool = True, gamma: float = 2.0, alpha: float = 0.25,
                 reduction: Reduction = "mean", loss_weight: float = 1.0) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        self.use_sigmoid = True  # heads read this: K logits, no background column
        self.gamma = gamma
        self.alpha = alpha

    def elementwise(self, pred: Tensor, target: Tensor,
                    weight: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if target.dim() == pred.dim():
            binary = target.float()  # (M, K) already
        else:
            binary = labels_to_binary(target, pred.shape[-1])  # (M, K)
        loss = sigmoid_focal_loss(pred, binary, alpha=self.alpha, gamma=self.gamma,
                                  reduction="none")  # (M, K)
        return loss, per_sample_weight(weight, loss)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, alpha={self.alpha}, " + super().extra_repr()
