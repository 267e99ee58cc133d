"""One-to-one assignment of queries to GT boxes (DETR's), MMDetection 3.3's HungarianAssigner.

M matching problems (images, or decoder layers x images: the head stacks every decoder layer's
problems into one call), Q queries, G GT slots (padding slots: label -1), C classifier outputs.

The cost of pairing query q with GT g is the sum of the configured match costs
(:mod:`detcli.task.assigners.match_costs`, each times its weight), computed batched on the
device for all M problems at once. The cost matrices and the GT validity go to the host in ONE
transfer per call (the one wait for the device; the matches come back in one host -> device
copy), ``scipy.optimize.linear_sum_assignment`` solves each problem on its valid
columns (min(Q, G_m) pairs, total cost minimal), and the matches come back as one
:class:`~detcli.task.assigners.assign_result.AssignResult` (M, Q): ``gt_index`` the matched GT
slot of each matched query, ``NEGATIVE`` (-1) for every other query (background); nothing is
ignored. ``max_iou`` holds the IoU of each matched pair (0 elsewhere): the analysis tools read
it; the assignment itself uses no IoU threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Optional, Sequence

import numpy as np
import torch
from pydantic import Field
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from detcli.config.schema import Schema
from detcli.errors import TrainingError
from detcli.ops.boxes import aligned_box_iou
from detcli.registry import ASSIGNERS, MATCH_COSTS
from detcli.task.assigners.assign_result import NEGATIVE, AssignResult
from detcli.task.assigners.match_costs import (
    BBoxL1CostConfig,
    ClassificationCostConfig,
    IoUCostConfig,
)

MatchCostConfig = Annotated[Schema, MATCH_COSTS]


def detr_match_costs() -> list[Schema]:
    """DETR's costs: classification 1, L1 on normalised (cx, cy, w, h) 5, GIoU 2."""
    return [ClassificationCostConfig(weight=1.0),
            BBoxL1CostConfig(weight=5.0, box_format="xywh"),
            IoUCostConfig(iou_mode="giou", weight=2.0)]


class HungarianAssignerConfig(Schema):
    type: Literal["HungarianAssigner"] = "HungarianAssigner"
    match_costs: list[MatchCostConfig] = Field(default_factory=detr_match_costs, min_length=1)


@dataclass(frozen=True)
class HungarianMatch:
    """The assignment (M, Q) and, on the host, the number of matched queries per problem
    (known once the solver ran: a loss normaliser reads it without a device sync)."""

    result: AssignResult
    num_matched: tuple[int, ...]  # M


@ASSIGNERS.register(HungarianAssignerConfig)
class HungarianAssigner:
    """Minimum-cost one-to-one matching of queries to GT (module docstring)."""

    # declared capabilities (detcli.task.protocols.Assigner): the costs read the predictions
    needs_predictions: ClassVar[bool] = True
    needs_num_level_priors: ClassVar[bool] = False
    explains: ClassVar[frozenset[str]] = frozenset()
    pos_iou_thr: Optional[float] = None

    def __init__(self, *, match_costs: Sequence[Schema]) -> None:
        """``match_costs``: match-cost configs (:func:`detr_match_costs` for DETR's)."""
        self.match_cost_cfgs = list(match_costs)
        self.match_costs: list[Any] = [MATCH_COSTS.build(cfg) for cfg in self.match_cost_cfgs]

    def cost_terms(self, scores: Tensor, boxes: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
                   img_shapes: Tensor) -> list[Tensor]:
        """Each weighted match cost, (M, Q, G) each, in the configured order (padding columns
        hold meaningless values)."""
        labels = gt_labels.clamp(min=0)  # padding slots index class 0; their columns are dropped
        return [cost(scores, boxes, gt_boxes, labels, img_shapes) for cost in self.match_costs]

    def match(self, scores: Tensor, boxes: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
              img_shapes: Tensor) -> HungarianMatch:
        """scores (M, Q, C) logits, boxes (M, Q, 4) pixels, gt_boxes (M, G, 4), gt_labels
        (M, G) (-1: padding), img_shapes (M, 2) -> the matches (module docstring)."""
        num, num_queries = scores.shape[:2]
        num_slots = gt_boxes.shape[1]
        valid = gt_labels >= 0  # (M, G)
        with torch.no_grad():
            if num_slots and num_queries:
                cost = torch.stack(self.cost_terms(scores, boxes, gt_boxes, gt_labels,
                                                   img_shapes)).sum(0)  # (M, Q, G)
                packed = torch.cat([cost.float().flatten(1), valid.float()], dim=1)
                host = packed.numpy(force=True)  # the one device -> host transfer (a wait)
            else:
                host = np.zeros((num, num_queries * num_slots + num_slots), dtype=np.float32)
        gt_index, counts = _solve(host, num_queries, num_slots)
        # the matches back: a host -> device copy (nothing is left queued to wait for)
        index = torch.from_numpy(gt_index).to(scores.device, non_blocking=True)  # (M, Q)
        matched = index >= 0
        slot = index.clamp(min=0)
        if num_slots:
            labels = torch.where(matched, gt_labels.gather(1, slot), -1)
            pair_gt = gt_boxes.gather(1, slot[..., None].expand(-1, -1, 4))  # (M, Q, 4)
            iou = torch.where(matched, aligned_box_iou(boxes.detach(), pair_gt), 0.0)
        else:  # no GT slot in the batch: every query is background
            labels = torch.full_like(index, -1)
            iou = torch.zeros(index.shape, dtype=torch.float32, device=index.device)
        result = AssignResult(gt_index=index, max_iou=iou, labels=labels,
                              num_gts=valid.sum(1))
        return HungarianMatch(result=result, num_matched=counts)

    def assign(self, scores: Tensor, boxes: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
               img_shapes: Tensor) -> AssignResult:
        """:meth:`match` without the host counts."""
        return self.match(scores, boxes, gt_boxes, gt_labels, img_shapes).result


def _solve(host: np.ndarray, num_queries: int, num_slots: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """Host rows (M, Q * G + G): each problem's cost matrix then its GT validity ->
    gt_index (M, Q) int64 (slot or NEGATIVE) and the matched count of each problem."""
    num = host.shape[0]
    costs = host[:, :num_queries * num_slots].reshape(num, num_queries, num_slots)
    valid = host[:, num_queries * num_slots:] > 0.5  # (M, G)
    gt_index = np.full((num, num_queries), NEGATIVE, dtype=np.int64)
    counts = []
    for m in range(num):
        columns = np.flatnonzero(valid[m])
        if columns.size == 0 or num_queries == 0:
            counts.append(0)
            continue
        block = costs[m][:, columns]
        if not np.isfinite(block).all():
            raise TrainingError(
                "HungarianAssigner: the matching cost has NaN or infinite entries (the "
                "predictions diverged); lower the learning rate or clip gradients "
                "(optimizer_config.grad_clip)")
        rows, cols = linear_sum_assignment(block)
        gt_index[m, rows] = columns[cols]
        counts.append(int(rows.size))
    return gt_index, tuple(counts)
