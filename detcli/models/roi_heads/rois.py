"""RoIs as a RoI head passes them around: per-image boxes flattened for the extractors
(:func:`batch_rois`) and the sampled training RoIs with their targets (:class:`RoISamples`),
shared by :mod:`~detcli.models.roi_heads.standard_roi_head`, its mask branch
(:mod:`~detcli.models.roi_heads.mask_branch`) and the cascade's stages.

N images, P boxes per image, S sampled slots per image, K classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def batch_rois(boxes: Tensor) -> Tensor:
    """Per-image boxes (N, P, 4) -> RoIs (N*P, 5) ``[batch_index, x1, y1, x2, y2]``
    (MMDetection's ``bbox2roi`` with every image holding P boxes)."""
    num_images, num_boxes = boxes.shape[:2]
    index = torch.arange(num_images, device=boxes.device, dtype=boxes.dtype)  # (N,)
    index = index[:, None, None].expand(-1, num_boxes, 1)  # (N, P, 1)
    return torch.cat([index, boxes], dim=-1).reshape(-1, 5)  # (N*P, 5)


@dataclass
class RoISamples:
    """The RoIs the box head learns from, S slots per image: positives first, then negatives,
    then padding (``valid`` False), each group in candidate order (GT boxes first)."""

    rois: Tensor  # (N, S, 4) boxes in network-input pixels; zeros on padding
    valid: Tensor  # (N, S) bool: a sampled RoI
    pos: Tensor  # (N, S) bool: a sampled positive
    gt_flags: Tensor  # (N, S) bool: the RoI is a GT box added as a proposal
    labels: Tensor  # (N, S) int64: class in [0, K) on positives, K elsewhere (padding too)
    label_weights: Tensor  # (N, S) float: pos_weight on positives, 1 on negatives, 0 on padding
    bbox_targets: Tensor  # (N, S, 4): encoded deltas (GT boxes with reg_decoded_bbox), 0 off pos
    bbox_weights: Tensor  # (N, S) float: 1 on positives, else 0
    gt_index: Tensor  # (N, S) int64: matched GT slot on positives, -1 elsewhere
    iou: Tensor  # (N, S) float: IoU with the best GT (1 for GT boxes); 0 on padding

    @property
    def num_pos(self) -> Tensor:
        return self.pos.sum(dim=1)  # (N,)

    @property
    def num_sampled(self) -> Tensor:
        return self.valid.sum(dim=1)  # (N,)
