"""Centerness (Tian et al. 2019): the score factor FCOS and ATSS heads predict beside the classes.

N images, L levels, H_l x W_l the feature map of level l, A priors per location (1 for FCOS
points and ATSS anchors), K classes; ``...`` any leading dims.

The centerness of a location inside a box, from its distances (left, top, right, bottom) to
the box's sides, is

    sqrt( min(l, r) / max(l, r) * min(t, b) / max(t, b) )

1 at the box's centre, falling to 0 at its border. A head learns it with a sigmoid
cross-entropy on positives, and at test time the sigmoid of its logit multiplies the class
score before NMS (``predict_dense(score_factors=...)``), so boxes predicted far from an
object's centre rank lower.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class ScoredDenseOutputs(NamedTuple):
    """Raw per-level outputs of a dense head with a score factor (a tuple: it traces whole).

    ``bbox_deltas`` are the head's encoded boxes: deltas from anchors (ATSS) or distances from
    points (FCOS). The first two fields read as :class:`~.anchor_head.DenseOutputs`'s; code
    that scores candidates must also apply ``score_factors``.
    """

    cls_logits: list[Tensor]  # L x (N, A*K, H_l, W_l)
    bbox_deltas: list[Tensor]  # L x (N, A*4, H_l, W_l)
    score_factors: list[Tensor]  # L x (N, A, H_l, W_l): centerness logits


def centerness_target(distances: Tensor) -> Tensor:
    """(left, top, right, bottom) distances (..., 4), all > 0 -> centerness (...) in (0, 1]."""
    left_right = distances[..., 0::2]  # (..., 2): l, r
    top_bottom = distances[..., 1::2]  # (..., 2): t, b
    ratio_x = left_right.amin(dim=-1) / left_right.amax(dim=-1)  # (...)
    ratio_y = top_bottom.amin(dim=-1) / top_bottom.amax(dim=-1)  # (...)
    return torch.sqrt(ratio_x * ratio_y)


def masked_centerness(distances: Tensor, positive: Tensor) -> Tensor:
    """Centerness (...) of the ``positive`` (...) entries of distances (..., 4), 0 elsewhere.

    Non-positive entries (distances of a location outside any box, or zeros) are replaced by a
    stand-in before dividing, so nothing here is NaN and the result is safe to weight a loss.
    """
    safe = torch.where(positive[..., None], distances.float(), torch.ones_like(distances.float()))
    return torch.where(positive, centerness_target(safe), torch.zeros_like(safe[..., 0]))
