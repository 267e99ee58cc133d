"""RTMDet's dynamic soft-label assignment, as MMDetection 3.3's ``DynamicSoftLabelAssigner``,
batched over images and GT (no Python loop over either).

N images, R priors per image (points ``(x, y, stride_w, stride_h)``, levels concatenated), G GT
slots per image (padding slots have label -1), K classes; k = ``topk``.

The assigner ranks priors by the model's own predictions (``needs_predictions``): for every
prior r and GT g it computes a cost from the prior's decoded box b_r and class logits x_r,

- IoU cost ``-log(IoU(b_r, g) + 1e-7) * iou_weight``;
- soft-label classification cost ``sum_c BCE(x_rc, y_c) * |y_c - sigmoid(x_rc)|^2`` with the
  soft label y = one-hot(label_g) * IoU(b_r, g);
- soft centre prior ``10 ** (|centre_r - centre_g| / stride_r - soft_center_radius)``;

on the *candidates* only: valid priors whose point lies strictly inside at least one GT (a
candidate may be matched to any GT, including one it is not inside). Each GT g then takes its
``k_g`` cheapest candidates, with the dynamic k

    k_g = max(1, int(sum of the k largest IoUs of g with the candidates' boxes));

a candidate taken by several GTs keeps only the GT of least cost over all GTs. A matched prior
is positive for its GT, with that pair's IoU as its quality (the soft label QFL trains
towards); every other valid prior is a negative; invalid priors (``prior_valid`` false) are
ignored.

Batched form: the (N, R, G) cost is INF off candidates and on padding slots; the per-GT
selection is one ``topk`` of k smallest costs along R, kept where the rank is below ``k_g``
(``k_g <= k`` since IoUs are at most 1), so the shapes never depend on the data. The
classification cost needs no (N, R, G, K) tensor: for c != label_g the target is 0 and the
term does not depend on g, so the cost is the sum of the zero-target terms over all K minus
the one at label_g, plus the soft-target term at label_g (the same sum, added in another
order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from detcli.config.schema import Schema
from detcli.errors import DetError
from detcli.ops.boxes import box_iou
from detcli.registry import ASSIGNERS
from detcli.task.assigners.assign_result import IGNORED, NEGATIVE, AssignResult

INF = 1e8
EPS = 1e-7


class DynamicSoftLabelAssignerConfig(Schema):
    """MMDetection 3.3's ``DynamicSoftLabelAssigner`` settings (RTMDet sets ``topk = 13``)."""

    type: Literal["DynamicSoftLabelAssigner"] = "DynamicSoftLabelAssigner"
    soft_center_radius: float = Field(3.0, ge=0)
    topk: int = Field(13, ge=1)
    iou_weight: float = Field(3.0, ge=0)


@dataclass
class SoftLabelCosts:
    """The terms of one batch's cost matrix, for reports: each (N, R, G), INF-free (the raw
    terms; ``candidate`` says where the assigner looks)."""

    cls_cost: Tensor
    iou_cost: Tensor
    center_prior: Tensor
    ious: Tensor  # IoU of each prior's predicted box with each GT
    candidate: Tensor  # (N, R) bool: a valid prior inside at least one GT
    dynamic_k: Tensor  # (N, G) int64: how many priors each GT takes (0 on padding slots)


@ASSIGNERS.register(DynamicSoftLabelAssignerConfig)
class DynamicSoftLabelAssigner:
    """See the module docstring. ``assign`` -> :class:`AssignResult` whose ``max_iou`` is, on a
    positive, the IoU of its predicted box with its GT (the soft label), and 0 elsewhere."""

    # declared capabilities (detcli.task.protocols.Assigner)
    needs_predictions: ClassVar[bool] = True
    needs_num_level_priors: ClassVar[bool] = False
    explains: ClassVar[frozenset[str]] = frozenset({"costs"})  # costs(...): SoftLabelCosts
    pos_iou_thr: Optional[float] = None  # soft labels from the predictions' IoU, no threshold

    def __init__(self, *, soft_center_radius: float = 3.0, topk: int = 13,
                 iou_weight: float = 3.0) -> None:
        self.soft_center_radius = soft_center_radius
        self.topk = topk
        self.iou_weight = iou_weight

    def __repr__(self) -> str:
        return (f"DynamicSoftLabelAssigner(topk={self.topk}, soft_center_radius="
                f"{self.soft_center_radius}, iou_weight={self.iou_weight})")

    @torch.no_grad()
    def costs(self, priors: Tensor, gt_boxes: Tensor, gt_labels: Tensor, pred_boxes: Tensor,
              pred_logits: Tensor, prior_valid: Optional[Tensor] = None) -> SoftLabelCosts:
        """priors (R, 4) as (x, y, s_w, s_h), gt_boxes (N, G, 4), gt_labels (N, G), pred_boxes
        (N, R, 4) decoded, pred_logits (N, R, K), prior_valid (N, R) -> the cost terms."""
        num_images, num_priors = pred_boxes.shape[:2]
        if priors.shape[0] != num_priors or priors.shape[-1] < 3:
            raise DetError(f"DynamicSoftLabelAssigner needs priors (R, 4) as (x, y, s_w, s_h) "
                           f"for the {num_priors} predictions, got {tuple(priors.shape)}")
        gt_boxes = gt_boxes.float()
        gt_valid = gt_labels >= 0  # (N, G)
        if prior_valid is None:
            prior_valid = torch.ones(num_images, num_priors, dtype=torch.bool,
                                     device=priors.device)
        centres = priors[:, :2].float()  # (R, 2)
        to_sides = torch.cat([centres[None, :, None, :] - gt_boxes[:, None, :, :2],
                              gt_boxes[:, None, :, 2:] - centres[None, :, None, :]],
                             dim=-1)  # (N, R, G, 4)
        inside = (to_sides.amin(dim=-1) > 0) & gt_valid[:, None, :]  # (N, R, G)
        candidate = inside.any(dim=-1) & prior_valid  # (N, R)

        gt_centres = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2.0  # (N, G, 2)
        distance = (centres[None, :, None, :] - gt_centres[:, None, :, :]).pow(2).sum(-1).sqrt()
        distance = distance / priors[:, 2].float()[None, :, None]  # (N, R, G) in strides
        center_prior = torch.pow(10, distance - self.soft_center_radius)  # (N, R, G)

        ious = box_iou(pred_boxes.float(), gt_boxes)  # (N, R, G)
        iou_cost = -torch.log(ious + EPS) * self.iou_weight  # (N, R, G)

        logits = pred_logits.float()  # (N, R, K)
        prob = logits.sigmoid()
        zero_terms = F.binary_cross_entropy_with_logits(
            logits, torch.zeros_like(logits), reduction="none") * prob.pow(2)  # (N, R, K)
        index = gt_labels.clamp(min=0)[:, None, :].expand(-1, num_priors, -1)  # (N, R, G)
        logit_c = logits.gather(2, index)  # (N, R, G): the logit of each GT's class
        prob_c = prob.gather(2, index)
        zero_c = zero_terms.gather(2, index)
        soft_c = F.binary_cross_entropy_with_logits(
            logit_c, ious, reduction="none") * (ious - prob_c).abs().pow(2)  # (N, R, G)
        cls_cost = zero_terms.sum(dim=-1, keepdim=True) - zero_c + soft_c  # (N, R, G)

        usable = candidate[:, :, None] & gt_valid[:, None, :]  # (N, R, G)
        k = min(self.topk, num_priors)
        top_ious = ious.masked_fill(~usable, 0).topk(k, dim=1).values  # (N, k, G) descending
        dynamic_k = top_ious.sum(dim=1).int().clamp(min=1).long()  # (N, G)
        dynamic_k = torch.where(gt_valid, dynamic_k, torch.zeros_like(dynamic_k))
        return SoftLabelCosts(cls_cost, iou_cost, center_prior, ious, candidate, dynamic_k)

    @torch.no_grad()
    def assign(self, priors: Tensor, gt_boxes: Tensor, gt_labels: Tensor, *,
               pred_boxes: Tensor, pred_logits: Tensor,
               prior_valid: Optional[Tensor] = None) -> AssignResult:
        """Arguments as :meth:`costs` -> :class:`AssignResult` (N, R) (module docstring)."""
        terms = self.costs(priors, gt_boxes, gt_labels, pred_boxes, pred_logits, prior_valid)
        return self.match(terms, gt_labels, prior_valid)

    def match(self, terms: SoftLabelCosts, gt_labels: Tensor,
              prior_valid: Optional[Tensor] = None) -> AssignResult:
        """The dynamic-k matching of :meth:`costs`' terms -> :class:`AssignResult`."""
        num_images, num_priors, num_slots = terms.ious.shape
        gt_valid = gt_labels >= 0  # (N, G)
        usable = terms.candidate[:, :, None] & gt_valid[:, None, :]  # (N, R, G)
        cost = terms.cls_cost + terms.iou_cost + terms.center_prior  # (N, R, G)
        cost = cost.masked_fill(~usable, INF)
        k = min(self.topk, num_priors)
        top_cost, top_index = cost.topk(k, dim=1, largest=False)  # (N, k, G) each
        rank = torch.arange(k, device=cost.device)[None, :, None]  # (1, k, 1)
        take = (rank < terms.dynamic_k[:, None, :]) & (top_cost < INF)  # (N, k, G)
        matching = torch.zeros_like(usable)  # (N, R, G)
        matching.scatter_(1, top_index, take)
        # a prior taken by several GTs keeps the GT of least cost over all GTs
        several = matching.sum(dim=-1) > 1  # (N, R)
        slots = torch.arange(num_slots, device=cost.device)  # (G,)
        cheapest = cost.argmin(dim=-1, keepdim=True) == slots if num_slots else matching
        matching = torch.where(several[..., None], cheapest, matching)
        positive = matching.any(dim=-1)  # (N, R)
        slot = matching.float().argmax(dim=-1) if num_slots else positive.long()  # (N, R)
        quality = (matching * terms.ious).sum(dim=-1)  # (N, R): the matched pair's IoU
        gt_index = torch.where(positive, slot, torch.full_like(slot, NEGATIVE))
        if prior_valid is not None:
            gt_index = torch.where(prior_valid, gt_index, torch.full_like(gt_index, IGNORED))
        labels = gt_labels.gather(1, slot) if num_slots else torch.full_like(slot, -1)
        labels = torch.where(gt_index >= 0, labels, torch.full_like(labels, -1))
        return AssignResult(gt_index=gt_index, max_iou=torch.where(gt_index >= 0, quality, 0.0),
                            labels=labels, num_gts=gt_valid.sum(dim=1))

    def config(self) -> DynamicSoftLabelAssignerConfig:
        return DynamicSoftLabelAssignerConfig(soft_center_radius=self.soft_center_radius,
                                              topk=self.topk, iou_weight=self.iou_weight)
