"""Point <-> box encoding of anchor-free heads, as MMDetection 2.x's ``DistancePointBBoxCoder``.

``...`` leading dims, broadcast between points and boxes/distances (points (R, 2) against
distances (N, R, 4) decodes a whole batch at once). Points are (x, y) in pixels (extra columns,
such as the strides ``grid_priors(with_stride=True)`` appends, are ignored); boxes are
(x1, y1, x2, y2) in pixels; distances are (left, top, right, bottom) from the point to the
box's sides:

    left = x - x1,  top = y - y1,  right = x2 - x,  bottom = y2 - y

``decode(points, encode(points, boxes)) == boxes`` exactly (up to float rounding) while no
``max_dis`` clamp applies and the box contains the point. A point outside its box gets
negative distances. Both directions compute in float32 and return float32.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
from torch import Tensor

from detcli.config.schema import Schema
from detcli.ops.boxes import ShapeLike, clip_boxes
from detcli.registry import BBOX_CODERS


def points_to_distances(points: Tensor, boxes: Tensor, max_dis: Optional[float] = None,
                        eps: float = 0.1) -> Tensor:
    """points (..., 2+), boxes (..., 4) -> (left, top, right, bottom) (..., 4), float32.

    With ``max_dis``, each distance is clamped to ``[0, max_dis - eps]`` (MMDetection's
    ``bbox2distance``, used by GFL's integral regression).
    """
    x, y = points[..., 0].float(), points[..., 1].float()
    boxes = boxes.float()
    distances = torch.stack([x - boxes[..., 0], y - boxes[..., 1],
                             boxes[..., 2] - x, boxes[..., 3] - y], dim=-1)  # (..., 4)
    if max_dis is not None:
        distances = distances.clamp(min=0, max=max_dis - eps)
    return distances


def distances_to_boxes(points: Tensor, distances: Tensor,
                       max_shape: Optional[ShapeLike] = None) -> Tensor:
    """points (..., 2+), distances (..., 4) -> boxes (..., 4), float32, clipped to ``max_shape``
    (one (h, w), or a Tensor (N, 2) per image for distances (N, R, 4)) when given."""
    x, y = points[..., 0].float(), points[..., 1].float()
    distances = distances.float()
    boxes = torch.stack([x - distances[..., 0], y - distances[..., 1],
                         x + distances[..., 2], y + distances[..., 3]], dim=-1)  # (..., 4)
    return boxes if max_shape is None else clip_boxes(boxes, max_shape)


class DistancePointBBoxCoderConfig(Schema):
    type: Literal["DistancePointBBoxCoder"] = "DistancePointBBoxCoder"
    clip_border: bool = True  # clip decoded boxes to max_shape when one is given


@BBOX_CODERS.register(DistancePointBBoxCoderConfig)
class DistancePointBBoxCoder:
    """Encode target boxes as distances from points, and decode predicted distances to boxes."""

    def __init__(self, *, clip_border: bool = True) -> None:
        self.clip_border = clip_border

    def encode(self, points: Tensor, boxes: Tensor, max_dis: Optional[float] = None,
               eps: float = 0.1) -> Tensor:
        """points (..., 2+), target boxes (..., 4) -> distances (..., 4), float32."""
        return points_to_distances(points, boxes, max_dis, eps)

    def decode(self, points: Tensor, distances: Tensor,
               max_shape: Optional[ShapeLike] = None) -> Tensor:
        """points (..., 2+), distances (..., 4) -> boxes (..., 4), float32; clipped to
        ``max_shape`` when given and ``clip_border``."""
        return distances_to_boxes(points, distances, max_shape if self.clip_border else None)
