"""What the dynamic soft-label assigner (RTMDet's) weighed for one image: per GT its candidate
points, the cost terms, the dynamic k and the chosen positives with their soft labels.

R points over all levels, G GT boxes of one image, k = the assigner's ``topk``. Boxes and
points are in network-input pixels.

Everything comes from the configured assigner itself: the head hands it its predictions
(:meth:`~detcli.models.protocols.PredictionAssigningHead.predicted_priors` of a trained
model's outputs, or of the stand-in's, :mod:`detcli.analysis.stand_in`) and the assigner's
``costs`` gives the terms of its cost matrix and each GT's dynamic k
(:class:`~detcli.task.assigners.dynamic_soft_label.SoftLabelCosts`); the positives are the
head's own assignment (``explain_assignment``). This module only arranges them per GT:

- ``inside``: the points strictly inside the GT (valid ones). Every point inside *some* GT is
  a candidate of every GT, so a GT may also take a point of a neighbour;
- ``cost = cls_cost + iou_cost + center_prior`` of each candidate with the GT;
- ``top_iou_sum``: the sum of the k largest IoUs of the candidates' predicted boxes with the
  GT, and ``dynamic_k = max(1, int(top_iou_sum))``;
- ``cheapest``: the GT's k cheapest candidates in cost order, each ``chosen`` when its rank is
  below the dynamic k, and ``positive`` when the final assignment gave it to this GT (a point
  chosen by several GTs stays with the GT of least cost, so chosen and positive can differ);
- ``num_pos`` and ``mean_soft_label``: the GT's positives and the mean of their soft labels
  (their predicted box's IoU with the GT: what the quality focal loss trains the class score
  towards).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from detcli.models.protocols import PredictionAssigningHead
from detcli.structures.batch import ImageBatch
from detcli.structures.dense import DenseOutputs
from detcli.task.assigners.dynamic_soft_label import DynamicSoftLabelAssigner, INF


def _r(value: float, digits: int = 4) -> float:
    return round(float(value), digits)


@dataclass
class Predictions:
    """The outputs the assigner ranks points by, and where they came from (for the picture's
    legend and the report): a checkpoint's path, or the stand-in's description."""

    outputs: DenseOutputs
    source: str


@dataclass
class CandidateCost:
    """One candidate point of one GT: its cost terms and what became of it."""

    prior: int  # index into the view's priors
    level: int
    point: tuple[float, float]
    cls_cost: float
    iou_cost: float
    center_prior: float
    cost: float
    iou: float  # its predicted box's IoU with the GT (the soft label if positive)
    chosen: bool  # among the GT's dynamic-k cheapest
    positive: bool  # assigned to this GT in the end

    def to_dict(self) -> dict[str, Any]:
        return {"prior": self.prior, "level": self.level,
                "point": [_r(v, 2) for v in self.point], "cls_cost": _r(self.cls_cost),
                "iou_cost": _r(self.iou_cost), "center_prior": _r(self.center_prior),
                "cost": _r(self.cost), "iou": _r(self.iou), "chosen": self.chosen,
                "positive": self.positive}


@dataclass
class GTCosts:
    """One GT's row of the dynamic-k table (module docstring)."""

    index: int
    num_inside: int
    num_inside_per_level: list[int]  # L
    top_iou_sum: float
    dynamic_k: int
    num_pos: int
    mean_soft_label: float  # 0 without positives
    cheapest: list[CandidateCost]

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "num_inside": self.num_inside,
                "num_inside_per_level": self.num_inside_per_level,
                "top_iou_sum": _r(self.top_iou_sum), "dynamic_k": self.dynamic_k,
                "num_pos": self.num_pos, "mean_soft_label": _r(self.mean_soft_label),
                "cheapest": [c.to_dict() for c in self.cheapest]}


@dataclass
class CostExplanation:
    """The dynamic soft-label assignment of one image, per GT (module docstring)."""

    predictions: str
    topk: int
    soft_center_radius: float
    iou_weight: float
    num_candidates: int  # valid points inside at least one GT
    inside: np.ndarray  # (G, R) bool
    chosen: np.ndarray  # (G, R) bool: among the GT's dynamic-k cheapest
    gts: list[GTCosts]

    def to_dict(self) -> dict[str, Any]:
        return {"predictions": self.predictions, "topk": self.topk,
                "soft_center_radius": self.soft_center_radius, "iou_weight": self.iou_weight,
                "num_candidates": self.num_candidates, "gts": [g.to_dict() for g in self.gts]}


@torch.no_grad()
def explain_costs(assigner: DynamicSoftLabelAssigner, head: PredictionAssigningHead,
                  predictions: Predictions, images: ImageBatch, gt_boxes: Tensor,
                  gt_labels: Tensor, level: Tensor, gt_index: Tensor) -> CostExplanation:
    """The cost explanation of one image: gt_boxes (G, 4), gt_labels (G,), the priors' levels
    (R,) and the head's assignment codes (R,) for the same ``predictions``."""
    pred = head.predicted_priors(predictions.outputs, images)
    terms = assigner.costs(pred.points, gt_boxes[None].to(pred.boxes), gt_labels[None].long(),
                           pred.boxes, pred.logits, pred.valid)  # each (1, R, G)
    num_gt, num_levels = gt_boxes.shape[0], int(level.max()) + 1 if len(level) else 0
    cost = (terms.cls_cost + terms.iou_cost + terms.center_prior)[0]  # (R, G)
    usable = terms.candidate[0][:, None].expand_as(cost)  # (R, G)
    points = pred.points[:, :2]  # (R, 2)
    gt = gt_boxes.to(points)  # (G, 4)
    inside = ((points[None] > gt[:, None, :2]).all(-1) & (points[None] < gt[:, None, 2:]).all(-1)
              & pred.valid[0][None])  # (G, R)
    k = min(assigner.topk, cost.shape[0])
    masked = cost.masked_fill(~usable, INF)  # (R, G)
    top_cost, top_index = masked.topk(k, dim=0, largest=False)  # (k, G) each
    top_iou_sum = terms.ious[0].masked_fill(~usable, 0).topk(k, dim=0).values.sum(0)  # (G,)
    dynamic_k = terms.dynamic_k[0]  # (G,)
    chosen = torch.zeros(num_gt, cost.shape[0], dtype=torch.bool)  # (G, R)
    gts = []
    for g in range(num_gt):
        mine = gt_index == g  # (R,)
        soft = terms.ious[0, mine, g]  # (P_g,)
        rows = []
        for rank, r in enumerate(top_index[:, g].tolist()):
            if top_cost[rank, g] >= INF:
                break
            chosen[g, r] = rank < int(dynamic_k[g])
            rows.append(CandidateCost(
                prior=r, level=int(level[r]), point=tuple(points[r].tolist()),
                cls_cost=float(terms.cls_cost[0, r, g]), iou_cost=float(terms.iou_cost[0, r, g]),
                center_prior=float(terms.center_prior[0, r, g]), cost=float(cost[r, g]),
                iou=float(terms.ious[0, r, g]), chosen=bool(chosen[g, r]),
                positive=bool(mine[r])))
        per_level = torch.bincount(level[inside[g]], minlength=num_levels)  # (L,)
        gts.append(GTCosts(
            index=g, num_inside=int(inside[g].sum()),
            num_inside_per_level=[int(v) for v in per_level.tolist()],
            top_iou_sum=float(top_iou_sum[g]), dynamic_k=int(dynamic_k[g]),
            num_pos=int(mine.sum()), mean_soft_label=float(soft.mean()) if len(soft) else 0.0,
            cheapest=rows))
    return CostExplanation(
        predictions=predictions.source, topk=assigner.topk,
        soft_center_radius=assigner.soft_center_radius, iou_weight=assigner.iou_weight,
        num_candidates=int(terms.candidate[0].sum()), inside=inside.cpu().numpy(),
        chosen=chosen.numpy(), gts=gts)
