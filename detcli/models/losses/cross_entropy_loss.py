"""Cross-entropy classification loss, softmax or sigmoid, MMDetection 2.x semantics.

M samples, K foreground classes.

Softmax (``use_sigmoid = false``): ``pred`` are (M, K + 1) logits, the last column background;
``target`` labels (M,) in [0, K]. ``class_weight`` has K + 1 entries and weights each sample by
its label's entry (``torch.nn.functional.cross_entropy``'s ``weight``).

Sigmoid (``use_sigmoid = true``): ``pred`` are (M, K) logits, one independent binary problem per
class; ``target`` labels (M,) in [0, K] with ``K`` meaning background (all K targets 0), or a
float (M, K) target. ``class_weight`` has K entries and, as in MMDetection, weighs the positive
term of each class (``binary_cross_entropy_with_logits``'s ``pos_weight``).

A label equal to ``ignore_index`` (-100) contributes zero loss (in sigmoid mode so does any
negative label). With ``avg_non_ignore = true`` and no ``avg_factor``, ``"mean"`` divides by the
number of non-ignored elements instead of all elements.

Mask (``use_mask = true``, MMDetection's ``mask_cross_entropy``, the mask head's ``loss_mask``):
``pred`` are (M, C, h, w) per-pixel logits of M RoIs (C = K, or 1 for a class-agnostic head),
``target`` (M, h, w) binary mask targets and ``labels`` (M,) the class channel of each RoI (not
needed when C = 1). The loss is binary cross-entropy with logits on that channel, element-wise
(M, h, w); ``weight`` holds one value per RoI. ``"mean"`` divides by all M * h * w elements, as
MMDetection does (it has no weights); a caller that pads RoI slots gives them weight 0 and
passes ``avg_factor`` = real RoIs * h * w, which is the same number.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor

from detcli.config.schema import Maybe, Schema
from detcli.errors import ConfigError, DetError
from detcli.models.losses.focal_loss import labels_to_binary
from detcli.models.losses.utils import Reduction, WeightedLoss, per_sample_weight
from detcli.registry import LOSSES

MASK_NOT_SIGMOID = ("CrossEntropyLoss: use_mask = true (per-pixel mask cross-entropy) and "
                    "use_sigmoid = true are two different losses; set one of them")
MASK_NO_CLASS_WEIGHT = ("CrossEntropyLoss: class_weight is not used with use_mask = true (the "
                        "mask loss is one binary problem per pixel); remove class_weight")


def _mask_options(use_sigmoid: bool, use_mask: bool, class_weight: object) -> str | None:
    """The problem with this combination of options, or None."""
    if use_mask and use_sigmoid:
        return MASK_NOT_SIGMOID
    if use_mask and class_weight is not None:
        return MASK_NO_CLASS_WEIGHT
    return None


class CrossEntropyLossConfig(Schema):
    type: Literal["CrossEntropyLoss"] = "CrossEntropyLoss"
    use_sigmoid: bool = False
    use_mask: bool = False
    reduction: Reduction = "mean"
    class_weight: Maybe[list[float]] = None
    ignore_index: int = -100
    avg_non_ignore: bool = False
    loss_weight: float = Field(1.0, ge=0)

    @model_validator(mode="after")
    def _mask_mode(self) -> CrossEntropyLossConfig:
        problem = _mask_options(self.use_sigmoid, self.use_mask, self.class_weight)
        if problem is not None:
            raise ValueError(problem)
        return self


@LOSSES.register(CrossEntropyLossConfig)
class CrossEntropyLoss(WeightedLoss):
    """Softmax, sigmoid or mask cross-entropy; ``forward`` as :class:`WeightedLoss`, plus
    ``labels`` (the class channel of each RoI) in mask mode."""

    def __init__(self, *, use_sigmoid: bool = False, use_mask: bool = False,
                 reduction: Reduction = "mean", class_weight: list[float] | None = None,
                 ignore_index: int = -100, avg_non_ignore: bool = False,
                 loss_weight: float = 1.0) -> None:
        super().__init__(reduction=reduction, loss_weight=loss_weight)
        problem = _mask_options(use_sigmoid, use_mask, class_weight)
        if problem is not None:
            raise ConfigError(problem)
        self.use_sigmoid = use_sigmoid
        self.use_mask = use_mask
        self.class_weight = None if class_weight is None else list(class_weight)
        # a buffer moves with the model, so the training step copies nothing host -> device
        weights = None if class_weight is None else torch.tensor(self.class_weight)
        self.register_buffer("class_weight_tensor", weights, persistent=False)
        self.ignore_index = ignore_index
        self.avg_non_ignore = avg_non_ignore

    def _class_weight(self, pred: Tensor) -> Tensor | None:
        if self.class_weight is None:
            return None
        if len(self.class_weight) != pred.shape[-1]:
            raise ConfigError(
                f"class_weight has {len(self.class_weight)} entries but the classifier has "
                f"{pred.shape[-1]} logits; give one weight per logit"
            )
        return self.class_weight_tensor.to(pred.device)  # (K + 1,) softmax, (K,) sigmoid

    def elementwise(self, pred: Tensor, target: Tensor,
                    weight: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if self.use_mask:  # pred (M, h, w): the class channel, picked by forward
            loss = F.binary_cross_entropy_with_logits(pred, target.to(pred),
                                                      reduction="none")  # (M, h, w)
            if weight is not None:
                weight = weight.float().reshape(-1, *([1] * (loss.dim() - 1)))  # (M, 1, 1)
            return loss, weight
        class_weight = self._class_weight(pred)
        if not self.use_sigmoid:
            loss = F.cross_entropy(pred, target, weight=class_weight, reduction="none",
                                   ignore_index=self.ignore_index)  # (M,)
            return loss, per_sample_weight(weight, loss)
        if target.dim() == pred.dim():
            binary, valid = target.float(), None  # (M, K) given
        else:
            binary = labels_to_binary(target, pred.shape[-1])  # (M, K)
            valid = ((target >= 0) & (target != self.ignore_index)).float().unsqueeze(-1)  # (M, 1)
        loss = F.binary_cross_entropy_with_logits(pred, binary, pos_weight=class_weight,
                                                  reduction="none")  # (M, K)
        weight = per_sample_weight(weight, loss)
        if valid is not None:
            weight = valid if weight is None else weight * valid
        return loss, weight

    def _non_ignored(self, pred: Tensor, target: Tensor) -> Tensor | float:
        """How many loss elements are not ignored (a tensor, not a Python number: no host sync)."""
        if self.use_sigmoid and target.dim() == pred.dim():
            return float(target.numel())
        valid = target != self.ignore_index
        if self.use_sigmoid:
            valid = valid & (target >= 0)
            return valid.sum().float() * pred.shape[-1]
        return valid.sum().float()

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None,
                avg_factor: float | Tensor | None = None,
                reduction_override: Reduction | None = None, *,
                labels: Tensor | None = None) -> Tensor:
        reduction = reduction_override or self.reduction
        if self.use_mask:
            pred = class_channel(pred, labels)  # (M, h, w)
        elif self.avg_non_ignore and avg_factor is None and reduction == "mean":
            avg_factor = self._non_ignored(pred, target)
        return super().forward(pred, target, weight, avg_factor, reduction_override)

    def extra_repr(self) -> str:
        return (f"use_sigmoid={self.use_sigmoid}, use_mask={self.use_mask}, "
                + super().extra_repr())


def class_channel(pred: Tensor, labels: Tensor | None) -> Tensor:
    """Each RoI's own class channel: pred (M, C, h, w), labels (M,) in [0, C) -> (M, h, w).

    With C = 1 (a class-agnostic mask head) ``labels`` may be None.
    """
    if pred.dim() != 4:
        raise DetError(f"the mask loss takes (M, C, h, w) logits, got shape {tuple(pred.shape)}")
    if labels is None:
        if pred.shape[1] != 1:
            raise DetError(f"the mask loss needs labels to pick one of the {pred.shape[1]} "
                           "class channels of each RoI")
        return pred[:, 0]
    index = labels.long().clamp(min=0, max=pred.shape[1] - 1)  # (M,)
    index = index.view(-1, 1, 1, 1).expand(-1, 1, *pred.shape[2:])  # (M, 1, h, w)
    return torch.gather(pred, 1, index).squeeze(1)  # (M, h, w)
