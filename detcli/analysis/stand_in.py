"""Stand-in predictions for an assigner that ranks priors by the model's own predictions
(RTMDet's dynamic soft-label assigner), when no trained model is given.

N images, R points (cells, levels concatenated), G GT slots per image (padding slots have
label -1), K classes. Boxes are (x1, y1, x2, y2) in network-input pixels.

The stand-in is a model that has learnt roughly what it should, with a known error, so a
report shows how the assigner's cost terms trade off (centre prior against IoU against
classification) without pretending to be a trained model:

- a point strictly inside a GT box predicts that GT's box (the smallest one when it lies in
  several, FCOS's tie rule), each side moved by ``jitter`` (default :data:`STAND_IN_JITTER`,
  0.1) times the GT's width (x) or height (y) times a standard normal draw of ``generator``
  (seeded: the same for the same seed and batch);
- its score for that GT's class is the IoU of the predicted box with the GT, every other class
  0 (the logits are those probabilities' logits, clamped to [1e-5, 1 - 1e-5]);
- a point inside no GT predicts its own cell and scores 0 everywhere; the assigner never
  looks at it (only points inside a GT are candidates).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from detcli.ops.boxes import aligned_box_iou, box_area

STAND_IN_JITTER = 0.1  # each side's error, in units of the GT's side
LOGIT_EPS = 1e-5  # scores are clamped to [eps, 1 - eps] before their logit

STAND_IN_TEXT = (f"stand-in predictions: each point inside a GT predicts that GT's box with "
                 f"every side jittered by {STAND_IN_JITTER:g} x its side (seeded), class score "
                 f"= its IoU with the GT")


@torch.no_grad()
def stand_in_predictions(cells: Tensor, gt_boxes: Tensor, gt_labels: Tensor, num_classes: int,
                         jitter: float = STAND_IN_JITTER,
                         generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
    """cells (R, 4) centred on the points, gt_boxes (N, G, 4), gt_labels (N, G) -> (predicted
    boxes (N, R, 4), class logits (N, R, K)) as the module docstring describes."""
    num_images, num_slots = gt_labels.shape
    num_points = cells.shape[0]
    device = cells.device
    points = (cells[:, :2] + cells[:, 2:]) / 2  # (R, 2)
    gt_boxes = gt_boxes.float()
    to_sides = torch.cat([points[None, :, None, :] - gt_boxes[:, None, :, :2],
                          gt_boxes[:, None, :, 2:] - points[None, :, None, :]],
                         dim=-1)  # (N, R, G, 4)
    inside = (to_sides.amin(dim=-1) > 0) & (gt_labels >= 0)[:, None, :]  # (N, R, G)
    area = box_area(gt_boxes)[:, None, :].expand(-1, num_points, -1)  # (N, R, G)
    owned = inside.any(dim=-1)  # (N, R)
    if num_slots:
        owner = area.masked_fill(~inside, float("inf")).argmin(dim=-1)  # (N, R)
    else:
        owner = torch.zeros(num_images, num_points, dtype=torch.long, device=device)
        gt_boxes = cells.new_zeros(num_images, 1, 4)
        gt_labels = torch.zeros(num_images, 1, dtype=torch.long, device=device)
    target = gt_boxes.gather(1, owner[..., None].expand(-1, -1, 4))  # (N, R, 4)
    sides = (target[..., 2:] - target[..., :2]).repeat(1, 1, 2)  # (N, R, 4): w, h, w, h
    noise = torch.randn(num_images, num_points, 4, generator=generator).to(device)  # (N, R, 4)
    moved = target + noise * jitter * sides  # (N, R, 4)
    moved = torch.cat([torch.minimum(moved[..., :2], moved[..., 2:]),
                       torch.maximum(moved[..., :2], moved[..., 2:])], dim=-1)  # x1 <= x2
    boxes = torch.where(owned[..., None], moved, cells[None].expand(num_images, -1, -1))
    iou = torch.where(owned, aligned_box_iou(boxes, target), 0.0)  # (N, R)
    label = gt_labels.clamp(min=0).gather(1, owner)  # (N, R)
    scores = torch.zeros(num_images, num_points, num_classes, device=device)  # (N, R, K)
    scores.scatter_(2, label[..., None], iou[..., None])
    return boxes, torch.logit(scores, eps=LOGIT_EPS)
