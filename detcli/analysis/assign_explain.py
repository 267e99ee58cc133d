"""What an assigner can show besides its codes, for ``det viz assign``'s picture and JSON.

L levels, G GT boxes of one image, C = sum_l min(topk, R_l) ATSS candidates per GT, R priors.
Boxes are in network-input pixels.

- An assigner with ``regions(gt_boxes)`` (the FCOS target rule,
  :class:`~detcli.task.assigners.fcos_rule.FCOSTargetAssigner`) gives, per level and
  GT, the region where a point of that level may become the GT's positive: ``eligible`` minus
  ``too_close`` (L, G, 4 each), the centre-sampling region ``center`` (or None) and the
  ``regress_ranges``.
- An assigner with ``candidates(...)`` (:class:`~detcli.task.assigners.atss.ATSSAssigner`)
  gives each GT's candidate priors (G, C), -1 where a level had fewer valid priors than
  ``topk``, and its IoU threshold (G,).

- An assigner with ``costs(...)`` (the dynamic soft-label assigner, RTMDet's) gives the terms
  of its cost matrix and each GT's dynamic k on the predictions it ranked
  (:mod:`detcli.analysis.soft_label_explain`).

Other assigners (MaxIoU) explain nothing beyond their codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from detcli.analysis import capabilities as can
from detcli.analysis.assignment import AssignmentParts, ImageAssignment, shaped_images
from detcli.analysis.soft_label_explain import CostExplanation, Predictions, explain_costs


@dataclass
class Explanation:
    """See the module docstring; every field is None when the assigner does not offer it."""

    regions: Optional[dict[str, Any]] = None  # "eligible", "too_close", "center", "regress_ranges"
    candidates: Optional[np.ndarray] = None  # (G, C) int64 prior indices, -1 for filler
    iou_thresholds: Optional[np.ndarray] = None  # (G,) float32
    costs: Optional[CostExplanation] = None  # the dynamic soft-label assigner's


def explain(parts: AssignmentParts, assignment: ImageAssignment,
            predictions: Optional[Predictions] = None) -> Explanation:
    """The FCOS rule's regions, ATSS's candidates, or the dynamic soft-label assigner's costs
    on ``predictions`` (the outputs the assignment was made with) for the image's GT boxes."""
    gt_boxes, gt_labels = assignment.gt_boxes, assignment.gt_labels.long()
    if can.explains_costs(parts.assigner) and predictions is not None:
        images = shaped_images(1, assignment.pad_shape, None, gt_boxes.device)
        return Explanation(costs=explain_costs(
            parts.assigner, can.prediction_head(parts.head), predictions, images, gt_boxes,
            gt_labels, assignment.level, assignment.gt_index))
    if can.explains_regions(parts.assigner):
        regions = parts.assigner.regions(gt_boxes)
        return Explanation(regions={
            "eligible": regions.eligible.numpy(), "too_close": regions.too_close.numpy(),
            "center": None if regions.center is None else regions.center.numpy(),
            "regress_ranges": list(regions.regress_ranges)})
    if can.lists_candidates(parts.assigner) and len(gt_boxes):
        cand = parts.assigner.candidates(assignment.priors, gt_boxes[None], gt_labels[None],
                                         parts.level_counts(assignment.pad_shape))
        index = torch.where(cand.valid[0], cand.index[0], -1)  # (1, G, C) -> (G, C)
        return Explanation(candidates=index.numpy(),
                           iou_thresholds=cand.iou_threshold[0].numpy())
    return Explanation()
