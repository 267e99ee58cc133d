"""What every loss shares: element-wise weights, reduction, ``avg_factor``, float32 compute.

M samples (priors or RoIs), K classes, D values per sample (4 for boxes).

The conventions are MMDetection 2.x's. A loss first computes an element-wise loss, multiplies
it by ``weight`` (same shape, or one value per sample), then reduces: ``"none"`` keeps the
element-wise tensor, ``"sum"`` adds it up, ``"mean"`` divides the sum by the element count or,
when ``avg_factor`` is given, by ``avg_factor`` (e.g. the number of positive anchors; a tiny
epsilon keeps ``avg_factor = 0`` finite). The result is scaled by ``loss_weight``.

Losses compute in float32 with autocast off, whatever the dtype of their inputs. A reduced loss
over zero elements is a zero that is still connected to ``pred``, so images without any GT give
a finite loss and ``backward`` runs.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

Reduction = Literal["none", "mean", "sum"]
REDUCTIONS: tuple[str, ...] = ("none", "mean", "sum")
AVG_EPS = torch.finfo(torch.float32).eps


def weight_reduce_loss(
    loss: Tensor,
    weight: Tensor | None = None,
    reduction: str = "mean",
    avg_factor: float | Tensor | None = None,
) -> Tensor:
    """Apply element-wise ``weight`` to ``loss`` and reduce it (see the module docstring)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction {reduction!r} must be one of {', '.join(REDUCTIONS)}")
    if weight is not None:
        loss = loss * weight
    if reduction == "none":
        return loss
    if avg_factor is not None:
        if reduction == "sum":
            raise ValueError('avg_factor cannot be used with reduction="sum"; use "mean"')
        return loss.sum() / (avg_factor + AVG_EPS)
    if reduction == "sum" or loss.numel() == 0:  # the mean of nothing would be NaN
        return loss.sum()
    return loss.mean()


def per_sample_weight(weight: Tensor | None, loss: Tensor) -> Tensor | None:
    """``weight`` shaped to multiply ``loss``: one value per sample (M,) becomes (M, 1)."""
    if weight is None:
        return None
    weight = weight.float()
    if weight.dim() == loss.dim() - 1:
        weight = weight.unsqueeze(-1)  # (M,) -> (M, 1)
    return weight


class WeightedLoss(nn.Module):
    """Base of the losses here: subclasses implement :meth:`elementwise`.

    ``forward(pred, target, weight=None, avg_factor=None, reduction_override=None)``:
    ``pred`` is cast to float32 and autocast is off inside; ``reduction_override`` replaces the
    configured reduction for one call.
    """

    def __init__(self, *, reduction: Reduction = "mean", loss_weight: float = 1.0) -> None:
        super().__init__()
        self.reduction = reduction
        self.loss_weight = loss_weight

    def elementwise(self, pred: Tensor, target: Tensor,
                    weight: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """The unreduced loss, and ``weight`` reshaped (and masked) to multiply it."""
        raise NotImplementedError

    def forward(
        self,
        pred: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
        reduction_override: Reduction | None = None,
    ) -> Tensor:
        reduction = reduction_override or self.reduction
        with torch.autocast(device_type=pred.device.type, enabled=False):
            loss, weight = self.elementwise(pred.float(), target, weight)
            return self.loss_weight * weight_reduce_loss(loss, weight, reduction, avg_factor)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, loss_weight={self.loss_weight}"
