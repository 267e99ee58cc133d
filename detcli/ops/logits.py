"""Probabilities and logits: the inverse of the sigmoid, clamped (MMDetection's
``inverse_sigmoid``), as query detectors refine boxes in logit space and RTMDet merges its
objectness into the class logits.

MMDetection writes it in three clamps: ``x = x.clamp(0, 1)``, then ``x.clamp(min=eps)`` over
``(1 - x).clamp(min=eps)``. Here the numerator is one clamp with both bounds,
``x.clamp(eps, 1.0)``, and the denominator MMDetection's ``(1 - x.clamp(0.0, 1.0))
.clamp(min=eps)``: the same values and gradients for every x, bit for bit
(tests/ops/test_logits.py; torch's clamp passes no gradient at a bound, so the denominator
keeps the [0, 1] clamp: below 2^-25, ``1 - x`` rounds to 1 in float32 and a two-bound clamp
of it would stop the gradient that MMDetection's passes). In ONNX no clamp of ``x`` feeds
another clamp. That matters when one tensor goes through ``inverse_sigmoid`` twice
(Deformable DETR's references: the decoder's box refinement and the head both take their
logit): MMDetection's chained clamps, fused by onnxscript's optimizer (successive Clips, or the
Max and Min of integer bounds, into one Clip), get bounds named after the input -- the same
name for both uses, and one of the two initializers is lost (onnxruntime: "Node input
'sigmoid_min_1' is not a graph input, initializer, or output of a previous node"; onnxscript
0.7.2). The bounds are floats: an integer ``max = 1`` beside a float ``min`` reaches
torch.export as a tensor bound beside a number, which aten.clamp refuses.
"""

from __future__ import annotations

import torch
from torch import Tensor


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """The logit of probabilities (...) clamped to [eps, 1 - eps]: ``sigmoid(inverse_sigmoid(p))
    == p`` for p in [eps, 1 - eps]; ``log(1 / eps)`` at and above 1, ``log(eps)`` at and below
    0 (``0 < eps < 1``)."""
    return torch.log(x.clamp(min=eps, max=1.0) / (1 - x.clamp(min=0.0, max=1.0)).clamp(min=eps))
