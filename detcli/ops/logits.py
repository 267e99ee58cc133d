"""Probabilities and logits: the inverse of the sigmoid, clamped (MMDetection's
``inverse_sigmoid``), as query detectors refine boxes in logit space."""

from __future__ import annotations

import torch
from torch import Tensor


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """The logit of probabilities (...) clamped to [eps, 1 - eps]: ``sigmoid(inverse_sigmoid(p))
    == p`` for p in [eps, 1 - eps]."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))
