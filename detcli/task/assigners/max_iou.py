"""Max-IoU assignment of GT boxes to priors, as MMDetection 2.x's ``MaxIoUAssigner``.

N images, R priors per image, G GT slots per image (padding slots have label -1), I ignore-box
slots. Codes of the result are documented in :mod:`detcli.task.assigners.assign_result`.

The steps, numbered as in the code (the order matters):

1. every prior starts IGNORED;
2. a prior whose best IoU lies in the negative interval (``[0, neg_iou_thr)``, or
   ``[lo, hi)`` when ``neg_iou_thr`` is a pair) becomes NEGATIVE;
3. a prior whose best IoU is ``>= pos_iou_thr`` becomes positive for that GT (ties between GTs
   go to the lower slot);
4. with ``match_low_quality``, every GT whose best IoU is ``>= min_pos_iou`` claims its best
   priors: all priors at exactly that IoU (``gt_max_assign_all``) or the first one. This can
   overwrite step 3, and when several GTs claim one prior the highest slot wins (MMDetection
   loops over GTs in order). As in MMDetection, with ``min_pos_iou = 0`` a GT that overlaps no
   prior at all claims every prior with IoU 0 -- the data layer should drop empty GT boxes.

Before step 2, priors that overlap an ignore box by IoF ``> ignore_iof_thr`` (when that is
``> 0``) take no part: they stay IGNORED and no GT can claim them in step 4. Priors flagged
invalid by ``prior_valid`` take no part either. An image without GT is all NEGATIVE (except
invalid priors), whatever its ignore boxes.

Memory: the (N, G, R) overlaps grow with the batch's largest GT count G. At most
``gt_chunk_size`` GT slots are matched at once; a batch with more runs in ceil(G / c) passes
over GT slices, each keeping only running (N, R) maxima, so the peak holds N x c x R overlaps
instead of N x G x R. The result is bitwise the same: every IoU is computed alone, and the
running maxima keep the lower slot on ties as one ``max`` over G does. The number of passes
depends on G, a shape, never on values: no host synchronisation.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Optional, Union

import torch
from pydantic import Field, model_validator
from torch import Tensor

from detcli.config.schema import Schema
from detcli.ops.boxes import box_iou
from detcli.registry import ASSIGNERS
from detcli.task.assigners.assign_result import IGNORED, NEGATIVE, AssignResult

UnitFloat = Annotated[float, Field(ge=0, le=1)]


class MaxIoUAssignerConfig(Schema):
    type: Literal["MaxIoUAssigner"] = "MaxIoUAssigner"
    pos_iou_thr: UnitFloat = 0.5
    neg_iou_thr: Union[UnitFloat, tuple[UnitFloat, UnitFloat]] = 0.4  # upper bound, or [lo, hi)
    min_pos_iou: UnitFloat = 0.0
    gt_max_assign_all: bool = True
    ignore_iof_thr: float = Field(-1.0, le=1)  # <= 0: ignore boxes are not used
    ignore_wrt_candidates: bool = True  # IoF over the prior's area (else the ignore box's)
    match_low_quality: bool = True
    # GT slots matched at once (memory bound N x gt_chunk_size x R; the module docstring);
    # 0: all at once
    gt_chunk_size: int = Field(32, ge=0)

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> "MaxIoUAssignerConfig":
        lo, hi = _neg_interval(self.neg_iou_thr)
        if lo > hi:
            raise ValueError(f"neg_iou_thr interval [{lo}, {hi}) is empty: lo must be <= hi")
        if hi > self.pos_iou_thr:
            raise ValueError(
                f"neg_iou_thr upper bound {hi} is above pos_iou_thr {self.pos_iou_thr}; "
                "use a negative bound <= the positive threshold")
        return self


def _neg_interval(neg_iou_thr: Union[float, tuple[float, float]]) -> tuple[float, float]:
    if isinstance(neg_iou_thr, (int, float)):
        return 0.0, float(neg_iou_thr)
    lo, hi = neg_iou_thr
    return float(lo), float(hi)


@ASSIGNERS.register(MaxIoUAssignerConfig)
class MaxIoUAssigner:
    """Assign each prior to the GT it overlaps most, to background, or to neither."""

    # declared capabilities (detcli.task.protocols.Assigner)
    needs_predictions: ClassVar[bool] = False  # static: priors and GT only (no model needed)
    needs_num_level_priors: ClassVar[bool] = False
    explains: ClassVar[frozenset[str]] = frozenset()  # its IoUs explain it

    def __init__(
        self,
        *,
        pos_iou_thr: float = 0.5,
        neg_iou_thr: Union[float, tuple[float, float]] = 0.4,
        min_pos_iou: float = 0.0,
        gt_max_assign_all: bool = True,
        ignore_iof_thr: float = -1.0,
        ignore_wrt_candidates: bool = True,
        match_low_quality: bool = True,
        gt_chunk_size: int = 32,
    ) -> None:
        self.pos_iou_thr = pos_iou_thr
        self.neg_iou_thr = neg_iou_thr
        self.neg_lo, self.neg_hi = _neg_interval(neg_iou_thr)
        self.min_pos_iou = min_pos_iou
        self.gt_max_assign_all = gt_max_assign_all
        self.ignore_iof_thr = ignore_iof_thr
        self.ignore_wrt_candidates = ignore_wrt_candidates
        self.match_low_quality = match_low_quality
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
    ) -> AssignResult:
        """priors (R, 4) or (N, R, 4); gt_boxes (N, G, 4); gt_labels (N, G) int64, -1 on
        padding; ignore_boxes (N, I, 4) with ignore_valid (N, I) bool; prior_valid (R,) or
        (N, R) bool (e.g. MMDetection's anchor inside-flags). -> AssignResult over (N, R)."""
        num_images, num_slots = gt_labels.shape
        num_priors = priors.shape[-2]
        device = gt_labels.device
        gt_valid = gt_labels >= 0  # (N, G)
        num_gts = gt_valid.sum(dim=1)  # (N,)
        eligible = torch.ones(num_images, num_priors, dtype=torch.bool, device=device)  # (N, R)
        if prior_valid is not None:
            eligible = eligible & prior_valid
        prior_ok = eligible.clone()  # valid priors; `eligible` also drops ignored ones
        if ignore_boxes is not None and self.ignore_iof_thr > 0 and ignore_boxes.shape[1] > 0:
            eligible &= ~self._ignored(priors, ignore_boxes, ignore_valid)

        # 1. everything starts IGNORED
        gt_index = torch.full((num_images, num_priors), IGNORED, dtype=torch.long, device=device)
        if num_slots == 0 or num_priors == 0:  # nothing to match: valid priors are negative
            gt_index.masked_fill_(prior_ok, NEGATIVE)
            zeros = torch.zeros(num_images, num_priors, device=device)
            return AssignResult(gt_index, zeros, torch.full_like(gt_index, -1), num_gts)

        best_iou, best_gt, max_iou, claimant = self._match(priors, gt_boxes, gt_valid, eligible)

        # 2. negatives: best IoU in [lo, hi)
        negative = (best_iou >= self.neg_lo) & (best_iou < self.neg_hi)  # (N, R)
        gt_index.masked_fill_(negative, NEGATIVE)
        # 3. positives: best IoU >= pos_iou_thr
        gt_index = torch.where(best_iou >= self.pos_iou_thr, best_gt, gt_index)
        # 4. low-quality matches: each GT claims its best priors
        if claimant is not None:
            gt_index = torch.where(claimant >= 0, claimant, gt_index)

        gt_index = torch.where(num_gts[:, None] == 0, NEGATIVE, gt_index)  # image without GT
        gt_index = torch.where(prior_ok, gt_index, IGNORED)
        labels = torch.gather(gt_labels, 1, gt_index.clamp(min=0))  # (N, R)
        labels = torch.where(gt_index >= 0, labels, -1)
        return AssignResult(gt_index, max_iou, labels, num_gts)

    def _match(self, priors: Tensor, gt_boxes: Tensor, gt_valid: Tensor,
               eligible: Tensor) -> tuple[Tensor, Tensor, Tensor, Optional[Tensor]]:
        """The reductions over GT that steps 2-4 need, ``gt_chunk_size`` slots at a time.

        -> best_iou (N, R) float32 and best_gt (N, R) int64: each prior's best eligible GT
        (first maximum: the lower slot); max_iou (N, R): the best IoU over valid GT before
        priors are masked, clamped at 0; claimant (N, R) int64: the slot claiming the prior in
        step 4, -1 where none does (None without ``match_low_quality``).
        """
        num_slots = gt_boxes.shape[1]
        chunk = self.gt_chunk_size if self.gt_chunk_size > 0 else num_slots
        best_iou = best_gt = max_iou = claimant = None
        for start in range(0, num_slots, chunk):  # G is a shape: the passes are static
            stop = min(start + chunk, num_slots)
            overlaps = box_iou(gt_boxes[:, start:stop], priors)  # (N, c, R) float32
            overlaps.masked_fill_(~gt_valid[:, start:stop, None], -1.0)  # padding never matches
            part_max = overlaps.amax(dim=1)  # (N, R), before priors are masked
            overlaps.masked_fill_(~eligible[:, None, :], -1.0)  # ignored/invalid: no match
            part_best, part_gt = overlaps.max(dim=1)  # (N, R) per prior
            part_gt += start
            part_claimant = self._low_quality(overlaps, start) if self.match_low_quality \
                else None  # (N, R)
            if best_iou is None:
                best_iou, best_gt, max_iou, claimant = part_best, part_gt, part_max, part_claimant
                continue
            later = part_best > best_iou  # strict: a tie keeps the lower slot, as one max does
            best_iou = torch.where(later, part_best, best_iou)
            best_gt = torch.where(later, part_gt, best_gt)
            max_iou = torch.maximum(max_iou, part_max)
            if part_claimant is not None:  # the highest claiming slot wins
                claimant = torch.maximum(claimant, part_claimant)
        return best_iou, best_gt, max_iou.clamp(min=0), claimant

    def _low_quality(self, overlaps: Tensor, first_slot: int) -> Tensor:
        """Step 4 on GT slots ``first_slot ..`` with overlaps (N, c, R) -> claimant (N, R)
        int64: the highest slot claiming each prior, -1 where none does.

        When several GTs claim one prior the highest slot wins, as MMDetection's loop over GTs
        overwrites earlier ones. Padding slots and GTs with no usable prior have a best IoU of
        -1 < min_pos_iou, so they claim nothing.
        """
        num_slots, num_priors = overlaps.shape[1:]
        gt_best_iou, gt_best_prior = overlaps.max(dim=2)  # (N, c) per GT
        claims = gt_best_iou >= self.min_pos_iou  # (N, c)
        if self.gt_max_assign_all:
            hit = overlaps == gt_best_iou[:, :, None]  # (N, c, R)
        else:
            prior_ids = torch.arange(num_priors, device=overlaps.device)  # (R,)
            hit = prior_ids[None, None, :] == gt_best_prior[:, :, None]  # (N, c, R)
        hit &= claims[:, :, None]
        # the last claiming slot along G (-1 where no GT claims the prior)
        slots = torch.arange(first_slot, first_slot + num_slots,
                             device=overlaps.device)[None, :, None]  # (1, c, 1)
        return torch.where(hit, slots, -1).amax(dim=1)  # (N, R)

    def _ignored(self, priors: Tensor, ignore_boxes: Tensor,
                 ignore_valid: Optional[Tensor]) -> Tensor:
        """(N, R) bool: priors whose IoF with some valid ignore box is above ignore_iof_thr."""
        if self.ignore_wrt_candidates:
            iof = box_iou(priors, ignore_boxes, mode="iof")  # (N, R, I): over the prior's area
        else:
            iof = box_iou(ignore_boxes, priors, mode="iof")  # (N, I, R): over the box's area
            iof = iof.transpose(1, 2)  # (N, I, R) -> (N, R, I)
        if ignore_valid is not None:
            iof = iof.masked_fill(~ignore_valid[:, None, :], -1.0)
        return iof.amax(dim=2) > self.ignore_iof_thr  # (N, R)
