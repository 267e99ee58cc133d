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

Other assigners (MaxIoU) explain nothing beyond their codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from detcli.analysis import capabilities as can
from detcli.analysis.assignment import AssignmentParts, ImageAssignment


@dataclass
class Explanation:
    """See the module docstring; every field is None when the assigner does not offer it."""

    regions: Optional[dict[str, Any]] = None  # "eligible", "too_close", "center", "regress_ranges"
    candidates: Optional[np.ndarray] = None  # (G, C) int64 prior indices, -1 for filler
    iou_thresholds: Optional[np.ndarray] = None  # (G,) float32


def explain(parts: AssignmentParts, assignment: ImageAssignment) -> Explanation:
    """The FCOS rule's regions or ATSS's candidates for the image's GT boxes."""
    gt_boxes, gt_labels = assignment.gt_boxes, assignment.gt_labels.long()
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
