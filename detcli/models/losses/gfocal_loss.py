"""Generalized Focal Loss (Li et al. 2020): the quality focal loss and the distribution focal
loss, MMDetection 3.3 semantics (``mmdet/models/losses/gfocal_loss.py``).

M samples (priors), K classes, n + 1 bins of a distance distribution.

**QualityFocalLoss** trains the class score to be the box's quality (RTMDet: the IoU of the
predicted box with its GT). ``pred`` are logits (M, K) (probabilities with ``activated``);
``target`` is the soft target (M, K): the quality q at a positive's class, 0 elsewhere. With
p = sigmoid(logit), per element::

    loss = BCE(p, q) * |q - p| ** beta

(for q = 0 this is BCE(p, 0) * p ** beta, the negatives' term). The element losses are summed
over the K classes -> (M,), then weighted per sample and reduced as every loss
(:mod:`~detcli.models.losses.utils`). MMDetection's other target form, (labels, scores), is the
same numbers: a positive whose score is 0 gets the negatives' term.

**DistributionFocalLoss** trains a discrete distribution over the integers {0, ..., n} to put
its mass on the two bins around a real target y (GFL's integral box regression)::

    loss = CE(pred, floor(y)) * (floor(y) + 1 - y) + CE(pred, floor(y) + 1) * (y - floor(y))

``pred`` (M, n + 1) logits, ``target`` (M,) in [0, n).
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor

from detcli.config.schema import Schema
from detcli.errors import ConfigError
from detcli.models.losses.utils import Reduction, WeightedLoss
from detcli.registry import LOSSES

SIGMOID_ONLY = "QualityFocalLoss supports only use_sigmoid = true (as MMDetection's)"


def quality_focal_loss(pred: Tensor, target: Tensor, beta: float = 2.0,
                       activated: bool = False) -> Tensor:
    """Element-wise QFL summed over classes: pred (M, K), soft target (M, K) -> (M,)."""
    if pred.shape != target.shape:
        raise ValueError(f"QualityFocalLoss: pred shape {tuple(pred.shape)} differs from the "
                         f"soft target's {tuple(target.shape)}")
    target = target.to(pred.dtype)
    if activated:
        prob = pred
        bce = F.binary_cross_entropy(pred, target, reduction="none")  # (M, K)
    else:
        prob = pred.sigmoid()
        bce = F.binary_cross_entropy_with_logits(pred, target, reduction="none")  # (M, K)
    return (bce * (target - prob).abs().pow(beta)).sum(dim=1)  # (M,)


def distribution_focal_loss(pred: Tensor, target: Tensor) -> Tensor:
    """pred (M, n + 1) logits, target (M,) in [0, n) -> (M,)."""
    left = target.long()  # (M,): floor for targets >= 0
    right = left + 1
    weight_left = right.float() - target
    weight_right = target - left.float()
    return (F.cross_entropy(pred, left, reduction="none") * weight_left
            + F.cross_entropy(pred, right, reduction="none") * weight_right)


class QualityFocalLossConfig(Schema):
    type: Literal["QualityFocalLoss"] = "QualityFocalLoss"
    use_sigmoid: bool = True
    beta: float = Field(2.0, ge=0)
    reduction: Reduction = "mean"
    loss_weight: float = Field(1.0, ge=0)
    activated: bool = False  # pred are probabilities, not logits

    @field_validator("use_sigmoid")
    @classmethod
    def _sigmoid_only(cls, value: bool) -> bool:
        if not value:
            raise ValueError(SIGMOID_ONLY)
        return value


@LOSSES.register(QualityFocalLossConfig)
class QualityFocalLoss(WeightedLoss):
    """QFL on (M, K) logits and (M, K) soft targets; ``forward`` as :class:`WeightedLoss`
    (``weight`` per sample (M,))."""

    def __init__(self, *, use_sigmoid: bool = True, beta: float = 2.0,
                 reduction: Reduction = "mean", loss_weight: float = 1.0,
                 activated: bool = False) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        if not use_sigmoid:
            raise ConfigError(SIGMOID_ONLY)
        self.use_sigmoid = True  # heads read this: K logits, no background column
        self.beta = beta
        self.activated = activated

    def elementwise(self, pred: Tensor, target: Tensor,
                    weight: Tensor | None) -> tuple[Tensor, Tensor | None]:
        loss = quality_focal_loss(pred, target, self.beta, self.activated)  # (M,)
        return loss, None if weight is None else weight.float()

    def extra_repr(self) -> str:
        return f"beta={self.beta}, activated={self.activated}, " + super().extra_repr()


class DistributionFocalLossConfig(Schema):
    type: Literal["DistributionFocalLoss"] = "DistributionFocalLoss"
    reduction: Reduction = "mean"
    loss_weight: float = Field(1.0, ge=0)


@LOSSES.register(DistributionFocalLossConfig)
class DistributionFocalLoss(WeightedLoss):
    """DFL on (M, n + 1) logits and (M,) real targets; ``forward`` as :class:`WeightedLoss`."""

    def elementwise(self, pred: Tensor, target: Tensor,
                    weight: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if target.shape != pred.shape[:-1]:
            raise ValueError(f"DistributionFocalLoss: target shape {tuple(target.shape)} must "
                             f"be pred's {tuple(pred.shape)} without the bins")
        loss = distribution_focal_loss(pred, target.float())  # (M,)
        return loss, None if weight is None else weight.float()


__all__ = ["DistributionFocalLoss", "DistributionFocalLossConfig", "QualityFocalLoss",
           "QualityFocalLossConfig", "distribution_focal_loss", "quality_focal_loss"]
