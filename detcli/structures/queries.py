"""What a query-based head (DETR) predicts: :class:`QueryOutputs`.

L decoder layers whose outputs are kept (all of them with ``return_intermediate``, for the
auxiliary losses; the last is the prediction), N images, Q queries, C classifier outputs (K + 1
softmax logits with background last, or K sigmoid logits).
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor


class QueryOutputs(NamedTuple):
    """Per decoder layer, every query's class logits and box. A tuple, so tracing and
    ``torch.compile`` see its tensors."""

    cls_logits: Tensor  # (L, N, Q, C)
    boxes: Tensor  # (L, N, Q, 4) (cx, cy, w, h) normalised by the image's (w, h), in [0, 1]

