"""Match costs: what pairing query q with GT g costs, for the Hungarian assignment.

M matching problems (images, or decoder layers x images), Q queries, G GT slots, C classifier
outputs (K + 1 softmax logits with background last, or K sigmoid logits).

Every cost is batched: ``cost(scores (M, Q, C), boxes (M, Q, 4), gt_boxes (M, G, 4),
gt_labels (M, G), img_shapes (M, 2)) -> (M, Q, G)``, times its ``weight``. Boxes are
(x1, y1, x2, y2) in network-input pixels; padding GT slots may hold anything (their columns are
dropped before solving) but their labels must be valid indices (the assigner passes 0).
MMDetection 3.3's ``match_cost.py`` semantics:

- ``ClassificationCost``: ``-softmax(scores)[q, label_g]``;
- ``FocalLossCost``: with p = sigmoid(score of label_g),
  ``alpha (1 - p)^gamma (-log(p + eps)) - (1 - alpha) p^gamma (-log(1 - p + eps))``;
- ``BBoxL1Cost``: L1 distance of the boxes divided by the image's (w, h, w, h), in
  ``box_format`` ``xywh`` (normalised centre and size, DETR's) or ``xyxy``;
- ``IoUCost``: ``-IoU`` or ``-GIoU`` of the boxes in pixels.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from detcli.config.schema import Schema
from detcli.ops.boxes import aligned_box_iou, aligned_giou, xyxy_to_cxcywh
from detcli.registry import MATCH_COSTS


def _per_gt(values: Tensor, gt_labels: Tensor) -> Tensor:
    """(M, Q, C) per-class values -> (M, Q, G): each query's value at each GT's class."""
    index = gt_labels[:, None, :].expand(-1, values.shape[1], -1)  # (M, Q, G)
    return values.gather(2, index)


class ClassificationCostConfig(Schema):
    type: Literal["ClassificationCost"] = "ClassificationCost"
    weight: float = Field(1.0, ge=0)


@MATCH_COSTS.register(ClassificationCostConfig)
class ClassificationCost:
    """Minus the softmax probability of the GT's class (module docstring)."""

    def __init__(self, *, weight: float = 1.0) -> None:
        self.weight = weight

    def __call__(self, scores: Tensor, boxes: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
                 img_shapes: Tensor) -> Tensor:
        return -_per_gt(scores.softmax(-1), gt_labels) * self.weight


class FocalLossCostConfig(Schema):
    type: Literal["FocalLossCost"] = "FocalLossCost"
    alpha: float = Field(0.25, ge=0, le=1)
    gamma: float = Field(2.0, ge=0)
    eps: float = Field(1e-12, gt=0)
    weight: float = Field(1.0, ge=0)


@MATCH_COSTS.register(FocalLossCostConfig)
class FocalLossCost:
    """The focal loss of calling the query the GT's class minus that of calling it background
    (module docstring); for sigmoid classifiers."""

    def __init__(self, *, alpha: float = 0.25, gamma: float = 2.0, eps: float = 1e-12,
                 weight: float = 1.0) -> None:
        self.alpha, self.gamma, self.eps, self.weight = alpha, gamma, eps, weight

    def __call__(self, scores: Tensor, boxes: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
                 img_shapes: Tensor) -> Tensor:
        prob = _per_gt(scores.sigmoid(), gt_labels)  # (M, Q, G)
        neg = -(1 - prob + self.eps).log() * (1 - self.alpha) * prob.pow(self.gamma)
        pos = -(prob + self.eps).log() * self.alpha * (1 - prob).pow(self.gamma)
        return (pos - neg) * self.weight


class BBoxL1CostConfig(Schema):
    type: Literal["BBoxL1Cost"] = "BBoxL1Cost"
    box_format: Literal["xyxy", "xywh"] = "xyxy"
    weight: float = Field(1.0, ge=0)


@MATCH_COSTS.register(BBoxL1CostConfig)
class BBoxL1Cost:
    """L1 distance of image-normalised boxes (module docstring)."""

    def __init__(self, *, box_format: Literal["xyxy", "xywh"] = "xyxy",
                 weight: float = 1.0) -> None:
        self.box_format, self.weight = box_format, weight

    def __call__(self, scores: Tensor, boxes: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
                 img_shapes: Tensor) -> Tensor:
        if self.box_format == "xywh":
            boxes, gt_boxes = xyxy_to_cxcywh(boxes), xyxy_to_cxcywh(gt_boxes)
        factor = img_shapes.flip(-1).repeat(1, 2).to(boxes.dtype)[:, None, :]  # (M, 1, 4)
        return torch.cdist(boxes / factor, gt_boxes / factor, p=1) * self.weight


class IoUCostConfig(Schema):
    type: Literal["IoUCost"] = "IoUCost"
    iou_mode: Literal["iou", "giou"] = "giou"
    weight: float = Field(1.0, ge=0)


@MATCH_COSTS.register(IoUCostConfig)
class IoUCost:
    """Minus the (G)IoU of the boxes (module docstring)."""

    def __init__(self, *, iou_mode: Literal["iou", "giou"] = "giou", weight: float = 1.0) -> None:
        self.iou_mode, self.weight = iou_mode, weight

    def __call__(self, scores: Tensor, boxes: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
                 img_shapes: Tensor) -> Tensor:
        overlap = aligned_giou if self.iou_mode == "giou" else aligned_box_iou
        pairs = overlap(boxes[:, :, None, :], gt_boxes[:, None, :, :])  # (M, Q, G)
        return -pairs * self.weight
