"""The second stage of a two-stage detector for ``det viz assign``: which proposals the RoI
head's assigner and sampler (``model.train_cfg.rcnn``) make sampled positives and negatives,
and which they leave out, for one image's GT boxes.

G GT boxes, I ignore boxes, J jittered boxes per GT, B background boxes, P proposals, R' = G + P
candidates when the sampler adds the GT boxes as proposals (``add_gt_as_proposals``, else P).
Boxes are (x1, y1, x2, y2) in network-input pixels; (h, w) is the image before padding.

The proposals are jittered GT boxes or a checkpoint's RPN proposals
(:mod:`detcli.analysis.proposals`).

:func:`sample_candidates` assigns and samples them with the same calls, in the same order, as
:meth:`~detcli.models.roi_heads.standard_roi_head.StandardRoIHead.sample` (so one generator seed
draws the same RoIs), but keeps every candidate's fate instead of compacting the sampled ones.

A Mask R-CNN config (``model.roi_head.mask_head``, ``train_cfg.rcnn.mask_size`` = h = w) whose
GT comes with segmentations (an annotation file) also gets the mask targets of the sampled
positives, (R', h, w): each positive's GT mask cut to its RoI by the training code's own
:func:`~detcli.models.roi_heads.mask_target.mask_targets` (:func:`positive_mask_targets`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from detcli.analysis import capabilities as can
from detcli.analysis.assign_view import AssignmentView
from detcli.analysis.proposals import (
    BACKGROUND,
    IOU_RANGE,
    JITTER_PER_GT,
    checkpoint_proposals,
    jitter_proposals,
)
from detcli.errors import ConfigError, DetError
from detcli.models.roi_heads.mask_target import mask_targets
from detcli.ops.boxes import box_iou
from detcli.registry import ASSIGNERS, SAMPLERS
from detcli.task.assigners.assign_result import IGNORED, NEGATIVE


# -- assignment and sampling ------------------------------------------------------------------

@dataclass
class RCNNParts:
    """The RoI head's assigner and sampler, built from ``model.train_cfg.rcnn``."""

    assigner: Any
    sampler: Any
    assigner_cfg: Any
    sampler_cfg: Any

    @classmethod
    def from_config(cls, cfg: Any) -> RCNNParts:
        """ConfigError (exit 2) for a config without an RoI head or without train_cfg."""
        model = cfg.model
        if not can.is_two_stage(model):
            raise ConfigError(f"{model.type} has no rpn_head and roi_head: the RoI sampling "
                              "view applies to two-stage detectors")
        if model.train_cfg is None:
            raise ConfigError("model.train_cfg = false: there is no RoI assigner and sampler "
                              "to show", hint="remove `train_cfg = false`, or set "
                                              "model.train_cfg.rcnn")
        rcnn = model.train_cfg.rcnn
        if isinstance(rcnn, list):  # Cascade R-CNN: stage 0 samples the proposals (the view)
            rcnn = rcnn[0]
        return cls(ASSIGNERS.build(rcnn.assigner), SAMPLERS.build(rcnn.sampler),
                   rcnn.assigner, rcnn.sampler)

    @property
    def num(self) -> Optional[int]:
        """The sampler's budget per image (None: it keeps every candidate)."""
        return can.sampler_num(self.sampler)

    @property
    def pos_fraction(self) -> Optional[float]:
        return can.sampler_pos_fraction(self.sampler)

    @property
    def max_pos(self) -> Optional[int]:
        """At most this many sampled positives: ``int(num * pos_fraction)``."""
        return can.sampler_max_pos(self.sampler)

    @property
    def add_gt(self) -> bool:
        return can.sampler_adds_gt(self.sampler)


@dataclass
class CandidateSampling:
    """Every candidate of one image, R' of them (GT boxes first when added)."""

    boxes: Tensor  # (R', 4)
    gt_flags: Tensor  # (R',) bool: a GT box added as a proposal
    gt_index: Tensor  # (R',) int64 codes: >= 0 the matched GT, -1 negative, -2 ignored
    max_iou: Tensor  # (R',) IoU with the best GT
    sampled_pos: Tensor  # (R',) bool
    sampled_neg: Tensor  # (R',) bool


@torch.no_grad()
def sample_candidates(parts: RCNNParts, proposals: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
                      ignore_boxes: Optional[Tensor] = None,
                      generator: Optional[torch.Generator] = None) -> CandidateSampling:
    """Proposals (P, 4), GT (G, 4) with labels (G,), ignore boxes (I, 4) -> every candidate's
    assignment and sampling, by StandardRoIHead.sample's calls (module docstring)."""
    boxes = proposals.float().reshape(1, -1, 4)  # (1, P, 4)
    gt = gt_boxes.to(boxes).reshape(1, -1, 4)  # (1, G, 4)
    labels = gt_labels.long().reshape(1, -1)  # (1, G)
    ignore = (ignore_boxes if ignore_boxes is not None else boxes.new_zeros(0, 4)).to(boxes)
    ignore = ignore.reshape(1, -1, 4)  # (1, I, 4)
    ignore_valid = torch.ones(ignore.shape[:2], dtype=torch.bool)  # (1, I)
    valid = torch.ones(boxes.shape[:2], dtype=torch.bool)  # (1, P)
    assign = parts.assigner.assign(boxes, gt, labels, ignore, ignore_valid, prior_valid=valid)
    sampled = parts.sampler.sample(assign, boxes, gt, labels, generator=generator)  # over (1, R')
    num_candidates = sampled.pos_mask.shape[1]
    return CandidateSampling(
        boxes=sampled.priors.reshape(-1, num_candidates, 4)[0],
        gt_flags=sampled.gt_flags[0], gt_index=sampled.assign.gt_index[0],
        max_iou=sampled.assign.max_iou[0], sampled_pos=sampled.pos_mask[0],
        sampled_neg=sampled.neg_mask[0])


def positive_mask_targets(gt_masks: Tensor, sampling: CandidateSampling,
                          mask_size: int) -> Tensor:
    """gt_masks (G, H, W) of the network input -> the (R', h, w) float {0, 1} mask target of
    each sampled positive (what ``loss_mask`` compares with), zeros for every other candidate."""
    gt_index = torch.where(sampling.sampled_pos, sampling.gt_index,
                           torch.full_like(sampling.gt_index, -1))  # (R',)
    return mask_targets(gt_masks.float()[None], sampling.boxes.float()[None], gt_index[None],
                        (mask_size, mask_size))[0]  # (R', h, w)


# -- the view ---------------------------------------------------------------------------------

@dataclass
class RCNNGTStats:
    """One GT box's row of the RoI table."""

    index: int
    label: int
    class_name: str
    num_proposals: int  # proposals (not GT boxes) assigned positive to it
    num_sampled_pos: int  # sampled positives matched to it, its own box included
    gt_sampled: bool  # its own box (added as a proposal) is a sampled positive
    best_iou: float  # best IoU of any proposal with it

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "label": self.label, "class": self.class_name,
                "num_proposals": self.num_proposals, "num_sampled_pos": self.num_sampled_pos,
                "gt_sampled": self.gt_sampled, "best_iou": round(self.best_iou, 4)}


@dataclass
class RoISamplingView:
    """Everything the RoI picture and table show, numpy arrays in network-input pixels."""

    image: np.ndarray  # (H, W, 3) uint8 BGR
    img_shape: tuple[int, int]
    pad_shape: tuple[int, int]
    gt_boxes: np.ndarray  # (G, 4)
    class_names: tuple[str, ...]
    source: str  # "jitter" or "checkpoint"
    proposals: np.ndarray  # (P, 4)
    candidates: np.ndarray  # (R', 4)
    gt_flags: np.ndarray  # (R',) bool
    gt_index: np.ndarray  # (R',) int64 codes
    max_iou: np.ndarray  # (R',)
    sampled_pos: np.ndarray  # (R',) bool
    sampled_neg: np.ndarray  # (R',) bool
    gts: list[RCNNGTStats]
    assigner: str
    sampler: str
    sampler_num: Optional[int]
    pos_fraction: Optional[float]
    max_pos: Optional[int]
    add_gt: bool
    settings: dict[str, Any] = field(default_factory=dict)  # jitter/background or checkpoint
    mask_targets: Optional[np.ndarray] = None  # (R', h, w) {0, 1}, sampled positives only;
    # None: no mask head or no GT masks

    @property
    def not_sampled(self) -> np.ndarray:
        return ~(self.sampled_pos | self.sampled_neg)  # (R',)

    @property
    def counts(self) -> dict[str, Any]:
        return {
            "proposals": int(len(self.proposals)), "candidates": int(len(self.candidates)),
            "gt_added": int(self.gt_flags.sum()),
            "assigned_positive": int((self.gt_index >= 0).sum()),
            "assigned_negative": int((self.gt_index == NEGATIVE).sum()),
            "ignored": int((self.gt_index == IGNORED).sum()),
            "sampled_positive": int(self.sampled_pos.sum()),
            "sampled_negative": int(self.sampled_neg.sum()),
            "not_sampled": int(self.not_sampled.sum()),
            "sampler_num": self.sampler_num, "pos_fraction": self.pos_fraction,
            "max_positive": self.max_pos,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"proposals": {"source": self.source, **self.settings},
                "assigner": self.assigner, "sampler": self.sampler,
                "add_gt_as_proposals": self.add_gt, "counts": self.counts,
                "gts": [gt.to_dict() for gt in self.gts],
                "mask_size": None if self.mask_targets is None
                else int(self.mask_targets.shape[-1])}


def _gt_stats(sampling: CandidateSampling, proposals: Tensor, gt_boxes: Tensor,
              gt_labels: Sequence[int], class_names: Sequence[str]) -> list[RCNNGTStats]:
    best = (box_iou(gt_boxes, proposals).max(dim=1).values if len(proposals)
            else gt_boxes.new_zeros(len(gt_boxes)))  # (G,)
    from_proposal = ~sampling.gt_flags  # (R',)
    rows = []
    for g, label in enumerate(int(v) for v in gt_labels):
        mine = sampling.gt_index == g  # (R',)
        own = sampling.gt_flags & mine & sampling.sampled_pos  # (R',) its own box, sampled
        rows.append(RCNNGTStats(
            index=g, label=label,
            class_name=class_names[label] if 0 <= label < len(class_names) else str(label),
            num_proposals=int((mine & from_proposal).sum()),
            num_sampled_pos=int((mine & sampling.sampled_pos).sum()),
            gt_sampled=bool(own.any()), best_iou=float(best[g]) if len(best) else 0.0))
    return rows


def visualize_roi_sampling(
    cfg: Any,
    view: AssignmentView,
    pipeline: Sequence[Any],
    *,
    checkpoint: Optional[str | Path] = None,
    jitter: int = JITTER_PER_GT,
    background: int = BACKGROUND,
    seed: int = 0,
    device: Optional[str] = "cpu",
) -> RoISamplingView:
    """The RoI head's sampling of proposals for the GT of ``view`` (from
    :func:`~detcli.analysis.assign_view.visualize_assignment`, whose ``pipeline`` prepared the
    image): jittered proposals, or ``checkpoint``'s RPN proposals; ``seed`` seeds the jitter
    and the sampler (one generator each)."""
    parts = RCNNParts.from_config(cfg)
    if can.needs_predictions(parts.assigner):
        raise DetError(f"{type(parts.assigner).__name__} (model.train_cfg.rcnn.assigner) assigns "
                       "by the model's predictions: `det viz assign` cannot show it")
    if jitter < 0 or background < 0:
        raise DetError(f"--jitter and --background count boxes: they must be >= 0, got "
                       f"{jitter} and {background}")
    gt_boxes = torch.from_numpy(view.gt_boxes).float().reshape(-1, 4)  # (G, 4)
    if checkpoint is not None:
        proposals = checkpoint_proposals(cfg, checkpoint, view, pipeline, device)  # (P, 4)
        settings: dict[str, Any] = {"checkpoint": str(checkpoint),
                                    "rpn_proposal": cfg.model.train_cfg.rpn_proposal.model_dump(
                                        mode="json")}
        source = "checkpoint"
    else:
        proposals, _ = jitter_proposals(gt_boxes, view.img_shape, jitter, background,
                                        torch.Generator().manual_seed(seed))
        settings = {"jitter_per_gt": jitter, "background": background,
                    "iou_range": list(IOU_RANGE), "seed": seed}
        source = "jitter"
    ignore = torch.from_numpy(view.ignore_boxes).float().reshape(-1, 4)  # (I, 4)
    sampling = sample_candidates(parts, proposals, gt_boxes, torch.from_numpy(view.gt_labels),
                                 ignore, generator=torch.Generator().manual_seed(seed))
    mask_size = can.rcnn_mask_size(cfg.model)
    targets = None
    if mask_size is not None and view.gt_masks is not None:
        targets = positive_mask_targets(torch.from_numpy(view.gt_masks), sampling,
                                        mask_size).numpy()  # (R', h, w)
    return RoISamplingView(
        image=view.image, img_shape=view.img_shape, pad_shape=view.pad_shape,
        gt_boxes=view.gt_boxes, class_names=view.class_names, source=source,
        proposals=proposals.numpy(), candidates=sampling.boxes.numpy(),
        gt_flags=sampling.gt_flags.numpy(), gt_index=sampling.gt_index.numpy(),
        max_iou=sampling.max_iou.numpy(), sampled_pos=sampling.sampled_pos.numpy(),
        sampled_neg=sampling.sampled_neg.numpy(),
        gts=_gt_stats(sampling, proposals, gt_boxes, view.gt_labels.tolist(), view.class_names),
        assigner=type(parts.assigner).__name__, sampler=type(parts.sampler).__name__,
        sampler_num=parts.num, pos_fraction=parts.pos_fraction, max_pos=parts.max_pos,
        add_gt=parts.add_gt, settings=settings, mask_targets=targets)
