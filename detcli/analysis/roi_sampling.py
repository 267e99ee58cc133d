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

A Cascade R-CNN config (``model.train_cfg.rcnn`` a list, one section per stage) gets a view
per stage (:func:`visualize_roi_stages`): stage 0 samples the proposals; stage t + 1 samples the
boxes stage t's sampled RoIs were refined to (:mod:`detcli.analysis.refinement`: the
checkpoint's regression, or a stated stand-in without one), laid out in the slots training
uses and drawn from one generator in stage order, as
:meth:`~detcli.models.roi_heads.cascade_roi_head.CascadeRoIHead.stage_samples` draws them
(:func:`sample_stages`).

A Mask R-CNN config (``model.roi_head.mask_head``, ``train_cfg.rcnn.mask_size`` = h = w) whose
GT comes with segmentations (an annotation file) also gets the mask targets of the sampled
positives, (R', h, w): each positive's GT mask cut to its RoI by the training code's own
:func:`~detcli.models.roi_heads.mask_target.mask_targets` (:func:`positive_mask_targets`).
A Cascade Mask R-CNN trains a mask head per stage on that stage's positives: every stage's
view gets its own (``train_cfg.rcnn[t].mask_size``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from detcli.analysis import capabilities as can
from detcli.analysis.assign_view import AssignmentView
from detcli.analysis.proposals import (
    BACKGROUND,
    IOU_RANGE,
    JITTER_PER_GT,
    jitter_proposals,
    run_checkpoint,
)
from detcli.analysis.refinement import ModelRefiner, StageRefiner, TowardGT
from detcli.errors import ConfigError, DetError
from detcli.models.roi_heads.mask_target import mask_targets
from detcli.models.roi_heads.standard_roi_head import sampled_slots
from detcli.ops.boxes import box_iou
from detcli.registry import ASSIGNERS, SAMPLERS
from detcli.task.assigners.assign_result import IGNORED, NEGATIVE, AssignResult


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
        """The RoI head's (a cascade's stage 0) parts; ConfigError (exit 2) for a config
        without an RoI head or without train_cfg."""
        return cls.stages_from_config(cfg)[0]

    @classmethod
    def stages_from_config(cls, cfg: Any) -> list[RCNNParts]:
        """One per RoI stage: Faster R-CNN's one, a cascade's ``train_cfg.rcnn[t]`` each."""
        model = cfg.model
        if not can.is_two_stage(model):
            raise ConfigError(f"{model.type} has no rpn_head and roi_head: the RoI sampling "
                              "view applies to two-stage detectors")
        if model.train_cfg is None:
            raise ConfigError("model.train_cfg = false: there is no RoI assigner and sampler "
                              "to show", hint="remove `train_cfg = false`, or set "
                                              "model.train_cfg.rcnn")
        rcnn = model.train_cfg.rcnn
        sections = rcnn if isinstance(rcnn, list) else [rcnn]  # Cascade R-CNN: one per stage
        return [cls(ASSIGNERS.build(s.assigner), SAMPLERS.build(s.sampler), s.assigner,
                    s.sampler) for s in sections]

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

    def select(self, keep: Tensor) -> CandidateSampling:
        """The candidates where ``keep`` (R',) bool is True, in order."""
        return CandidateSampling(self.boxes[keep], self.gt_flags[keep], self.gt_index[keep],
                                 self.max_iou[keep], self.sampled_pos[keep],
                                 self.sampled_neg[keep])


def _assign(parts: RCNNParts, proposals: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
            ignore_boxes: Optional[Tensor], valid: Optional[Tensor]
            ) -> tuple[Tensor, Tensor, Tensor, AssignResult]:
    """The assigner on one image -> (boxes (1, P, 4), GT (1, G, 4), labels (1, G), the
    AssignResult over (1, P))."""
    boxes = proposals.float().reshape(1, -1, 4)  # (1, P, 4)
    gt = gt_boxes.to(boxes).reshape(1, -1, 4)  # (1, G, 4)
    labels = gt_labels.long().reshape(1, -1)  # (1, G)
    ignore = (ignore_boxes if ignore_boxes is not None else boxes.new_zeros(0, 4)).to(boxes)
    ignore = ignore.reshape(1, -1, 4)  # (1, I, 4)
    ignore_valid = torch.ones(ignore.shape[:2], dtype=torch.bool)  # (1, I)
    valid = (torch.ones(boxes.shape[:2], dtype=torch.bool) if valid is None
             else valid.reshape(1, -1))  # (1, P)
    assign = parts.assigner.assign(boxes, gt, labels, ignore, ignore_valid, prior_valid=valid)
    return boxes, gt, labels, assign


@torch.no_grad()
def assigned_positives(parts: RCNNParts, proposals: Tensor, gt_boxes: Tensor,
                       gt_labels: Tensor, ignore_boxes: Optional[Tensor] = None) -> int:
    """How many of the proposals (P, 4) ``parts``' assigner makes positive (no GT added, no
    sampling): a later cascade stage's threshold on the unrefined proposals."""
    return int((_assign(parts, proposals, gt_boxes, gt_labels, ignore_boxes, None)[3]
                .gt_index >= 0).sum())


@torch.no_grad()
def sample_candidates(parts: RCNNParts, proposals: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
                      ignore_boxes: Optional[Tensor] = None,
                      generator: Optional[torch.Generator] = None,
                      valid: Optional[Tensor] = None) -> CandidateSampling:
    """Proposals (P, 4) (``valid`` (P,) bool: the ones that take part; default all), GT (G, 4)
    with labels (G,), ignore boxes (I, 4) -> every candidate's assignment and sampling, by
    StandardRoIHead.sample's calls (module docstring). An invalid proposal stays a candidate,
    IGNORED, as in training."""
    boxes, gt, labels, assign = _assign(parts, proposals, gt_boxes, gt_labels, ignore_boxes,
                                        valid)
    sampled = parts.sampler.sample(assign, boxes, gt, labels, generator=generator)  # over (1, R')
    num_candidates = sampled.pos_mask.shape[1]
    return CandidateSampling(
        boxes=sampled.priors.reshape(-1, num_candidates, 4)[0],
        gt_flags=sampled.gt_flags[0], gt_index=sampled.assign.gt_index[0],
        max_iou=sampled.assign.max_iou[0], sampled_pos=sampled.pos_mask[0],
        sampled_neg=sampled.neg_mask[0])


def training_slots(sampling: CandidateSampling, num_slots: Optional[int]) -> Tensor:
    """The candidate in each of the S slots StandardRoIHead.sample compacts a sample into
    (S = ``num_slots``, the sampler's ``num``; None: one per candidate), by its own
    :func:`~detcli.models.roi_heads.standard_roi_head.sampled_slots`: the sampled positives,
    then the sampled negatives, each in candidate order, then padding -> (S,) int64 candidate
    indices, -1 on padding."""
    num_slots = len(sampling.boxes) if num_slots is None else num_slots
    order, pos, neg = sampled_slots(sampling.sampled_pos[None], sampling.sampled_neg[None],
                                    num_slots)  # (1, S) each
    return torch.where(pos | neg, order, -1)[0]  # (S,)


@dataclass
class StageSampling:
    """One RoI stage's input and sampling: its proposals (P_t, 4) -- the RPN's or jittered
    ones at stage 0, the previous stage's refined RoIs after it -- and its candidates (the GT
    boxes added, then those proposals)."""

    proposals: Tensor  # (P_t, 4)
    sampling: CandidateSampling


@torch.no_grad()
def sample_stages(stages: Sequence[RCNNParts], proposals: Tensor, gt_boxes: Tensor,
                  gt_labels: Tensor, ignore_boxes: Optional[Tensor], refiner: StageRefiner,
                  generator: Optional[torch.Generator] = None) -> list[StageSampling]:
    """Each RoI stage's sampling, as CascadeRoIHead's training makes it (module docstring).

    Stage t samples its boxes (:func:`sample_candidates`); its sampled RoIs, in the training
    slots (:func:`training_slots`), are refined by ``refiner`` (positives read their GT class)
    and become stage t + 1's boxes, except the GT boxes added that came out positive and the
    padding, which stay in their slots invalid -- so ``generator`` draws for every stage what
    training draws. Proposals (P, 4), GT (G, 4) with labels (G,), ignore boxes (I, 4)."""
    boxes = proposals.float().reshape(-1, 4)  # (P, 4)
    gt_boxes = gt_boxes.float().reshape(-1, 4)  # (G, 4)
    gt_labels = gt_labels.long().reshape(-1)  # (G,)
    valid = torch.ones(len(boxes), dtype=torch.bool)  # (P,)
    results = []
    for t, parts in enumerate(stages):
        sampling = sample_candidates(parts, boxes, gt_boxes, gt_labels, ignore_boxes,
                                     generator=generator, valid=valid)
        num_added = len(sampling.boxes) - len(boxes)  # the GT boxes the sampler prepended
        keep = torch.cat([torch.ones(num_added, dtype=torch.bool), valid])  # (R',)
        results.append(StageSampling(boxes[valid], sampling.select(keep)))
        if t + 1 == len(stages):
            break
        slots = training_slots(sampling, parts.num)  # (S,)
        used = slots >= 0  # (S,)
        index = slots.clamp(min=0)  # (S,)
        pos = sampling.sampled_pos[index] & used  # (S,)
        gt_index = torch.where(pos, sampling.gt_index[index], -1)  # (S,)
        labels = torch.where(pos, gt_labels[gt_index.clamp(min=0)] if len(gt_labels)
                             else gt_index, -1)  # (S,)
        rois = sampling.boxes[index] * used[:, None]  # (S, 4) zeros on padding
        valid = used & ~(sampling.gt_flags[index] & pos)  # (S,) MMDetection's pos_is_gt filter
        boxes = refiner.refine(t, rois, labels, gt_index) * valid[:, None]  # (S, 4)
    return results


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


POSITIVE_IOU_EDGES = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # bins of the positives' IoUs


@dataclass
class RoIStage:
    """Which stage of a cascade a view shows, and how its boxes were made."""

    index: int
    num_stages: int
    pos_iou_thr: Optional[float]  # the stage assigner's (None: it has none)
    refinement: Optional[dict[str, Any]]  # how the previous stage's RoIs were refined (None: 0)
    input_legend: str  # where the boxes come from, one short line
    unrefined_positive: int  # the stage-0 proposals this stage's assigner makes positive

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "num_stages": self.num_stages,
                "pos_iou_thr": self.pos_iou_thr, "refinement": self.refinement,
                "unrefined_positive": self.unrefined_positive}


@dataclass
class RoISamplingView:
    """Everything the RoI picture and table show, numpy arrays in network-input pixels."""

    image: np.ndarray  # (H, W, 3) uint8 BGR
    img_shape: tuple[int, int]
    pad_shape: tuple[int, int]
    gt_boxes: np.ndarray  # (G, 4)
    class_names: tuple[str, ...]
    source: str  # "jitter", "checkpoint", or "refined" (a cascade stage after the first)
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
    stage: Optional[RoIStage] = None  # a cascade's stage; None: the only RoI stage

    @property
    def not_sampled(self) -> np.ndarray:
        return ~(self.sampled_pos | self.sampled_neg)  # (R',)

    @property
    def positive_ious(self) -> np.ndarray:
        """IoU with their GT of the sampled positives that are proposals (P+,); the GT boxes
        added as proposals (IoU 1) are left out."""
        return self.max_iou[self.sampled_pos & ~self.gt_flags]

    @property
    def positive_proposals(self) -> int:
        """The proposals (not GT boxes) the assigner makes positive."""
        return int(((self.gt_index >= 0) & ~self.gt_flags).sum())

    @property
    def mean_positive_iou(self) -> Optional[float]:
        ious = self.positive_ious
        return float(ious.mean()) if len(ious) else None

    @property
    def positive_iou_histogram(self) -> list[int]:
        """How many of :attr:`positive_ious` fall in each bin of POSITIVE_IOU_EDGES (the last
        bin includes 1)."""
        return np.histogram(self.positive_ious, bins=POSITIVE_IOU_EDGES)[0].tolist()

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
        data = {"proposals": {"source": self.source, **self.settings},
                "assigner": self.assigner, "sampler": self.sampler,
                "add_gt_as_proposals": self.add_gt, "counts": self.counts,
                "gts": [gt.to_dict() for gt in self.gts],
                "mask_size": None if self.mask_targets is None
                else int(self.mask_targets.shape[-1])}
        if self.stage is not None:
            mean = self.mean_positive_iou
            data["stage"] = {**self.stage.to_dict(), "positive_proposals": self.positive_proposals,
                             "mean_positive_iou": None if mean is None else round(mean, 4),
                             "positive_iou_histogram": {
                                 "edges": list(POSITIVE_IOU_EDGES),
                                 "counts": self.positive_iou_histogram}}
        return data


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
    checkpoint: Optional[Union[str, Path]] = None,
    jitter: int = JITTER_PER_GT,
    background: int = BACKGROUND,
    seed: int = 0,
    device: Optional[str] = "cpu",
) -> RoISamplingView:
    """The RoI head's (a cascade's stage 0) sampling of proposals: :func:`visualize_roi_stages`'s
    first view."""
    return visualize_roi_stages(cfg, view, pipeline, checkpoint=checkpoint, jitter=jitter,
                                background=background, seed=seed, device=device)[0]


def visualize_roi_stages(
    cfg: Any,
    view: AssignmentView,
    pipeline: Sequence[Any],
    *,
    checkpoint: Optional[Union[str, Path]] = None,
    jitter: int = JITTER_PER_GT,
    background: int = BACKGROUND,
    seed: int = 0,
    device: Optional[str] = "cpu",
) -> list[RoISamplingView]:
    """Each RoI stage's sampling for the GT of ``view`` (from
    :func:`~detcli.analysis.assign_view.visualize_assignment`, whose ``pipeline`` prepared the
    image): one view for Faster R-CNN, one per stage for a cascade. The proposals are jittered
    GT boxes, or ``checkpoint``'s RPN proposals (whose box heads then refine a cascade's
    stages; without one :class:`~detcli.analysis.refinement.TowardGT` stands in); ``seed``
    seeds the jitter and the sampler (one generator each, the sampler's drawn stage by stage)."""
    stages = RCNNParts.stages_from_config(cfg)
    for t, parts in enumerate(stages):
        if can.needs_predictions(parts.assigner):
            where = "model.train_cfg.rcnn" if len(stages) == 1 else f"model.train_cfg.rcnn[{t}]"
            raise DetError(f"{type(parts.assigner).__name__} ({where}.assigner) assigns by the "
                           "model's predictions: `det viz assign` cannot show it")
    if jitter < 0 or background < 0:
        raise DetError(f"--jitter and --background count boxes: they must be >= 0, got "
                       f"{jitter} and {background}")
    gt_boxes = torch.from_numpy(view.gt_boxes).float().reshape(-1, 4)  # (G, 4)
    gt_labels = torch.from_numpy(view.gt_labels)  # (G,)
    refiner: StageRefiner
    if checkpoint is not None:
        run = run_checkpoint(cfg, checkpoint, view, pipeline, device)
        proposals = run.proposals  # (P, 4)
        settings: dict[str, Any] = {"checkpoint": str(checkpoint),
                                    "rpn_proposal": cfg.model.train_cfg.rpn_proposal.model_dump(
                                        mode="json")}
        source = "checkpoint"
        refiner = ModelRefiner(run)
    else:
        proposals, _ = jitter_proposals(gt_boxes, view.img_shape, jitter, background,
                                        torch.Generator().manual_seed(seed))
        settings = {"jitter_per_gt": jitter, "background": background,
                    "iou_range": list(IOU_RANGE), "seed": seed}
        source = "jitter"
        refiner = TowardGT(gt_boxes, tuple(view.img_shape))
    ignore = torch.from_numpy(view.ignore_boxes).float().reshape(-1, 4)  # (I, 4)
    sampled = sample_stages(stages, proposals, gt_boxes, gt_labels, ignore, refiner,
                            generator=torch.Generator().manual_seed(seed))
    mask_sizes = can.rcnn_mask_sizes(cfg.model)  # (Cascade) Mask R-CNN: one per stage
    views = []
    for t, (parts, stage) in enumerate(zip(stages, sampled)):
        sampling = stage.sampling
        targets = None
        if mask_sizes[t] is not None and view.gt_masks is not None:
            targets = positive_mask_targets(torch.from_numpy(view.gt_masks), sampling,
                                            mask_sizes[t]).numpy()  # (R', h, w)
        info = None if len(stages) == 1 else RoIStage(
            index=t, num_stages=len(stages), pos_iou_thr=can.pos_iou_thr(parts.assigner),
            refinement=None if t == 0 else refiner.to_dict(),
            input_legend="samples the proposals" if t == 0 else refiner.legend(t),
            unrefined_positive=assigned_positives(parts, proposals, gt_boxes, gt_labels, ignore))
        views.append(RoISamplingView(
            image=view.image, img_shape=view.img_shape, pad_shape=view.pad_shape,
            gt_boxes=view.gt_boxes, class_names=view.class_names,
            source=source if t == 0 else "refined",
            proposals=stage.proposals.numpy(), candidates=sampling.boxes.numpy(),
            gt_flags=sampling.gt_flags.numpy(), gt_index=sampling.gt_index.numpy(),
            max_iou=sampling.max_iou.numpy(), sampled_pos=sampling.sampled_pos.numpy(),
            sampled_neg=sampling.sampled_neg.numpy(),
            gts=_gt_stats(sampling, stage.proposals, gt_boxes, view.gt_labels.tolist(),
                          view.class_names),
            assigner=type(parts.assigner).__name__, sampler=type(parts.sampler).__name__,
            sampler_num=parts.num, pos_fraction=parts.pos_fraction, max_pos=parts.max_pos,
            add_gt=parts.add_gt, settings=settings if t == 0 else {}, mask_targets=targets,
            stage=info))
    return views
