"""Adaptive Training Sample Selection (Zhang et al. 2020), as MMDetection 2.x's ``ATSSAssigner``.

N images, R priors per image over L levels (R_l on level l, levels concatenated in order), G GT
slots per image (padding slots have label -1), I ignore-box slots, C = sum_l min(topk, R_l)
candidates per GT. Codes of the result are documented in
:mod:`detcli.task.assigners.assign_result`.

The steps, numbered as in the code:

1. the IoU of every GT with every prior, and the distance between their centres;
2. on each level, the ``topk`` priors whose centres are closest to the GT's centre are its
   candidates (C in all);
3. the GT's IoU threshold is the mean plus the standard deviation (unbiased, as ``torch.std``)
   of its candidates' IoUs;
4. a candidate is positive for the GT when its IoU is >= that threshold and its centre lies
   inside the GT (more than 0.01 pixels from every side);
5. a prior positive for several GTs goes to the one it overlaps most (ties: the lower slot);
   every other prior is NEGATIVE.

Priors flagged invalid by ``prior_valid`` take no part, as MMDetection drops anchors outside
the image before assigning: they are never candidates, and both a level's ``topk`` and the
statistics of step 3 count valid priors only; they are IGNORED in the result. A prior that
overlaps an ignore box by IoF ``> ignore_iof_thr`` (when that is ``> 0``) is IGNORED unless it
becomes positive; as in MMDetection its centre distance is set to ``INF``, so it is a candidate
only on a level with fewer than ``topk`` other valid priors. An image without GT is all
NEGATIVE (except invalid priors). Only when a GT has a single valid candidate does this differ
from MMDetection, whose ``std`` of one value is NaN (no positive): here it is 0.

The assigner needs to know where each level's priors start: callers pass
``num_level_priors`` (the class says so with ``needs_num_level_priors = True``).

Memory: steps 1-4 hold (N, G, R) IoUs and centre distances for the batch's largest GT count
G. Every GT's candidates depend on that GT alone, so ``assign`` runs steps 1-4 on at most
``gt_chunk_size`` GT slots at a time and keeps step 5's running (N, R) maximum: the peak holds
N x c x R instead of N x G x R, and the result is bitwise the same (a tie still goes to the
lower slot). The number of passes depends on G, a shape, never on values: no host
synchronisation. :meth:`ATSSAssigner.candidates` itself (for the tools) takes every GT at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, Optional, Sequence

import torch
from pydantic import Field
from torch import Tensor

from detcli.config.schema import Schema
from detcli.errors import DetError
from detcli.ops.boxes import box_iou
from detcli.registry import ASSIGNERS
from detcli.task.assigners.assign_result import IGNORED, NEGATIVE, AssignResult

INF = 1e8  # the centre distance of ignored priors (MMDetection's)


class ATSSAssignerConfig(Schema):
    type: Literal["ATSSAssigner"] = "ATSSAssigner"
    topk: int = Field(9, ge=1)  # candidates per level per GT
    ignore_iof_thr: float = Field(-1.0, le=1)  # <= 0: ignore boxes are not used
    # GT slots assigned at once (memory bound N x gt_chunk_size x R; the module docstring);
    # 0: all at once
    gt_chunk_size: int = Field(32, ge=0)


@dataclass
class ATSSCandidates:
    """Steps 1-4 for every GT: which priors were candidates and which of them passed."""

    index: Tensor  # (N, G, C) int64: candidate priors, level by level, nearest first
    valid: Tensor  # (N, G, C) bool: False for filler (a level with fewer valid priors than k)
    iou: Tensor  # (N, G, C) float32: each candidate's IoU with the GT
    iou_threshold: Tensor  # (N, G) float32: mean + std of the valid candidates' IoUs
    positive: Tensor  # (N, G, C) bool: passed steps 3 and 4 (before step 5's tie-break)
    overlaps: Tensor  # (N, G, R) float32: IoU of every GT with every prior (padding slots -1)


def _centres(boxes: Tensor) -> Tensor:
    return (boxes[..., :2] + boxes[..., 2:]) * 0.5  # (..., 4) -> (..., 2)


@ASSIGNERS.register(ATSSAssignerConfig)
class ATSSAssigner:
    """Positives by per-GT adaptive IoU thresholds over the nearest priors of each level."""

    # declared capabilities (detcli.task.protocols.Assigner)
    needs_predictions: ClassVar[bool] = False  # static: priors and GT only (no model needed)
    needs_num_level_priors: ClassVar[bool] = True  # callers pass ``num_level_priors``
    explains: ClassVar[frozenset[str]] = frozenset({"candidates"})  # candidates()
    pos_iou_thr: Optional[float] = None  # a threshold per GT (mean + std), not one

    def __init__(self, *, topk: int = 9, ignore_iof_thr: float = -1.0,
                 gt_chunk_size: int = 32) -> None:
        self.topk = topk
        self.ignore_iof_thr = ignore_iof_thr
        self.gt_chunk_size = gt_chunk_size

    @torch.no_grad()
    def assign(
        self,
        priors: Tensor,
        gt_boxes: Tensor,
        gt_labels: Tensor,
        ignore_boxes: Optional[Tensor] = None,
        ignore_valid: Optional[Tensor] = None,
        prior_valid: Optional[Tensor] = None,
        num_level_priors: Optional[Sequence[int]] = None,
    ) -> AssignResult:
        """priors (R, 4) or (N, R, 4), levels concatenated with ``num_level_priors`` (L ints
        summing to R); gt_boxes (N, G, 4); gt_labels (N, G), -1 on padding; ignore_boxes
        (N, I, 4) with ignore_valid (N, I); prior_valid (R,) or (N, R) bool.
        -> AssignResult over (N, R)."""
        num_images, num_slots = gt_labels.shape
        num_priors = priors.shape[-2]
        device = gt_labels.device
        gt_valid = gt_labels >= 0  # (N, G)
        num_gts = gt_valid.sum(dim=1)  # (N,)
        usable = torch.ones(num_images, num_priors, dtype=torch.bool, device=device)  # (N, R)
        if prior_valid is not None:
            usable = usable & prior_valid
        gt_index = torch.full((num_images, num_priors), NEGATIVE, dtype=torch.long, device=device)
        if num_slots == 0 or num_priors == 0:
            gt_index.masked_fill_(~usable, IGNORED)
            zeros = torch.zeros(num_images, num_priors, device=device)
            return AssignResult(gt_index, zeros, torch.full_like(gt_index, -1), num_gts)

        ignored = self._ignored(priors, ignore_boxes, ignore_valid, num_images)  # (N, R)
        best_iou, best_gt, max_iou = self._best_positive(priors, gt_boxes, gt_labels,
                                                         num_level_priors, usable, ignored)
        gt_index.masked_fill_(ignored, IGNORED)
        gt_index = torch.where(best_iou >= 0, best_gt, gt_index)
        gt_index = torch.where(num_gts[:, None] == 0, NEGATIVE, gt_index)  # image without GT
        gt_index = torch.where(usable, gt_index, IGNORED)
        labels = torch.gather(gt_labels, 1, gt_index.clamp(min=0))  # (N, R)
        labels = torch.where(gt_index >= 0, labels, -1)
        return AssignResult(gt_index, max_iou, labels, num_gts)

    def _best_positive(self, priors: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
                       num_level_priors: Optional[Sequence[int]], usable: Tensor,
                       ignored: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Steps 1-4 on ``gt_chunk_size`` GT slots at a time, and step 5's maximum over them.

        -> best_iou (N, R) float32: the IoU of each prior's best GT among those it is positive
        for, -1 where none; best_gt (N, R) int64: that GT's slot (ties: the lower slot);
        max_iou (N, R): the best IoU over valid GT, clamped at 0.
        """
        num_slots = gt_labels.shape[1]
        chunk = self.gt_chunk_size if self.gt_chunk_size > 0 else num_slots
        best_iou = best_gt = max_iou = None
        for start in range(0, num_slots, chunk):  # G is a shape: the passes are static
            stop = min(start + chunk, num_slots)
            cand = self.candidates(priors, gt_boxes[:, start:stop], gt_labels[:, start:stop],
                                   num_level_priors, usable, ignored)
            # 5. a prior positive for several GTs takes the one it overlaps most
            pos_matrix = torch.zeros_like(cand.overlaps, dtype=torch.bool)  # (N, c, R)
            pos_matrix.scatter_(2, cand.index, cand.positive)
            pos_iou = cand.overlaps.masked_fill(~pos_matrix, -1.0)  # (N, c, R)
            part_best, part_gt = pos_iou.max(dim=1)  # (N, R): first maximum = lowest slot
            part_gt += start
            part_max = cand.overlaps.amax(dim=1)  # (N, R)
            if best_iou is None:
                best_iou, best_gt, max_iou = part_best, part_gt, part_max
                continue
            later = part_best > best_iou  # strict: a tie keeps the lower slot, as one max does
            best_iou = torch.where(later, part_best, best_iou)
            best_gt = torch.where(later, part_gt, best_gt)
            max_iou = torch.maximum(max_iou, part_max)
        return best_iou, best_gt, max_iou.clamp(min=0)

    @torch.no_grad()
    def candidates(
        self,
        priors: Tensor,
        gt_boxes: Tensor,
        gt_labels: Tensor,
        num_level_priors: Optional[Sequence[int]],
        usable: Optional[Tensor] = None,
        ignored: Optional[Tensor] = None,
    ) -> ATSSCandidates:
        """Steps 1-4 (module docstring); ``usable`` and ``ignored`` are (N, R) bool."""
        num_images, num_slots = gt_labels.shape
        num_priors = priors.shape[-2]
        counts = self._level_counts(num_level_priors, num_priors)
        gt_valid = gt_labels >= 0  # (N, G)
        # 1. IoU and centre distances
        overlaps = box_iou(gt_boxes, priors)  # (N, G, R) float32
        overlaps.masked_fill_(~gt_valid[:, :, None], -1.0)  # padding slots never match
        prior_ctr = _centres(priors.float())  # (R, 2) or (N, R, 2)
        gt_ctr = _centres(gt_boxes.float())  # (N, G, 2)
        offsets = gt_ctr[:, :, None, :] - prior_ctr.unsqueeze(-3)  # (N, G, R, 2)
        distances = offsets.pow(2).sum(-1).sqrt()  # (N, G, R)
        if ignored is not None:
            distances.masked_fill_(ignored[:, None, :], INF)
        if usable is not None:
            distances.masked_fill_(~usable[:, None, :], float("inf"))  # never a candidate
        # 2. the topk nearest priors of each level (a loop over levels, not priors)
        index, valid, start = [], [], 0
        for count in counts:
            k = min(self.topk, count)
            if k > 0:
                near, near_index = distances[..., start:start + count].topk(
                    k, dim=-1, largest=False)  # (N, G, k) each
                index.append(near_index + start)
                valid.append(torch.isfinite(near))
            start += count
        cand_index = torch.cat(index, dim=-1)  # (N, G, C)
        cand_valid = torch.cat(valid, dim=-1) & gt_valid[:, :, None]  # (N, G, C)
        # 3. per-GT threshold: mean + unbiased std of the valid candidates' IoUs
        cand_iou = overlaps.gather(2, cand_index)  # (N, G, C)
        weight = cand_valid.float()  # (N, G, C)
        num_cand = weight.sum(-1)  # (N, G)
        mean = (cand_iou * weight).sum(-1) / num_cand.clamp(min=1)  # (N, G)
        var = ((cand_iou - mean[..., None]) ** 2 * weight).sum(-1) / (num_cand - 1).clamp(min=1)
        threshold = mean + var.sqrt()  # (N, G)
        # 4. IoU at least the threshold, centre inside the GT
        if prior_ctr.dim() == 2:
            cand_ctr = prior_ctr[cand_index]  # (N, G, C, 2)
        else:
            per_gt = prior_ctr[:, None].expand(-1, num_slots, -1, -1)  # (N, G, R, 2)
            cand_ctr = per_gt.gather(2, cand_index[..., None].expand(-1, -1, -1, 2))  # (N, G, C, 2)
        box = gt_boxes.float()[:, :, None, :]  # (N, G, 1, 4)
        sides = torch.stack([cand_ctr[..., 0] - box[..., 0], cand_ctr[..., 1] - box[..., 1],
                             box[..., 2] - cand_ctr[..., 0], box[..., 3] - cand_ctr[..., 1]],
                            dim=-1)  # (N, G, C, 4)
        inside = sides.amin(dim=-1) > 0.01  # (N, G, C)
        positive = (cand_iou >= threshold[..., None]) & inside & cand_valid  # (N, G, C)
        return ATSSCandidates(cand_index, cand_valid, cand_iou, threshold, positive, overlaps)

    @staticmethod
    def _level_counts(num_level_priors: Optional[Sequence[int]], num_priors: int) -> list[int]:
        if num_level_priors is None:
            raise DetError("ATSSAssigner.assign needs num_level_priors (the number of priors "
                           "on each level, in order): it picks candidates level by level")
        counts = [int(c) for c in num_level_priors]
        if sum(counts) != num_priors:
            raise DetError(f"num_level_priors {counts} add up to {sum(counts)}, but there are "
                           f"{num_priors} priors")
        return counts

    def _ignored(self, priors: Tensor, ignore_boxes: Optional[Tensor],
                 ignore_valid: Optional[Tensor], num_images: int) -> Tensor:
        """(N, R) bool: priors whose IoF with a valid ignore box is above ignore_iof_thr."""
        num_priors = priors.shape[-2]
        none = torch.zeros(num_images, num_priors, dtype=torch.bool, device=priors.device)
        if ignore_boxes is None or self.ignore_iof_thr <= 0 or ignore_boxes.shape[1] == 0:
            return none
        iof = box_iou(priors, ignore_boxes, mode="iof")  # (N, R, I): over the prior's area
        if ignore_valid is not None:
            iof = iof.masked_fill(~ignore_valid[:, None, :], -1.0)
        return iof.amax(dim=2) > self.ignore_iof_thr  # (N, R)
