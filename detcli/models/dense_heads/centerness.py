"""Centerness (Tian et al. 2019): the score factor FCOS and ATSS heads predict beside the classes.

N images, L levels, H_l x W_l the feature map of level l, A priors per location (1 for FCOS
points and ATSS anchors), K classes; ``...`` any leading dims.

The centerness of a location inside a box, from its distances (left, top, right, bottom) to
the box's sides, is

    sqrt( min(l, r) / max(l, r) * min(t, b) / max(t, b) )

1 at the box's centre, falling to 0 at its border. A head learns it with a sigmoid
cross-entropy on positives, and at test time the sigmoid of its logit multiplies the class
score before NMS (``DenseOutputs.score_factors``, applied by ``dense_predict.dense_candidates``), so boxes predicted far from an
object's centre rank lower.
"""

from __future__ import annotations

import torch
from torch import Tensor


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
