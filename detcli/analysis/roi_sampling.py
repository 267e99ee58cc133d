"""The second stage of a two-stage detector for ``det viz assign``: which proposals the RoI
head's assigner and sampler (``model.train_cfg.rcnn``) make sampled positives and negatives,
and which they leave out, for one image's GT boxes.

G GT boxes, I ignore boxes, J jittered boxes per GT, B background boxes, P proposals, R' = G + P
candidates when the sampler adds the GT boxes as proposals (``add_gt_as_proposals``, else P).
Boxes are (x1, y1, x2, y2) in network-input pixels; (h, w) is the image before padding.

Proposals come from one of two sources:

- **jitter** (no checkpoint, no network): per GT, J boxes whose IoU with it spreads evenly over
  ``IOU_RANGE`` (:func:`jitter_boxes`: one target IoU drawn in each of J equal strata, the box
  found on a random path of shift and scale away from the GT), and B random background boxes
  (:func:`background_boxes`); all inside the image, deterministic for a seed;
- **a checkpoint**: the model's own RPN on the network input, with the proposal settings
  training uses (``model.train_cfg.rpn_proposal``), the model in eval mode
  (:func:`checkpoint_proposals`). The input is the picture's image normalised again by the
  pipeline's ``Normalize``, so the proposals sit exactly on what is drawn (the picture's 8-bit
  pixels round the input by at most half a grey level).

:func:`sample_candidates` assigns and samples them with the same calls, in the same order, as
:meth:`~detcli.models.roi_heads.standard_roi_head.StandardRoIHead.sample` (so one generator seed
draws the same RoIs), but keeps every candidate's fate instead of compacting the sampled ones.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from detcli.errors import ConfigError, DetError
from detcli.ops.boxes import box_iou
from detcli.registry import ASSIGNERS, SAMPLERS
from detcli.structures.batch import ImageBatch
from detcli.task.assigners.assign_result import IGNORED, NEGATIVE

if TYPE_CHECKING:
    from detcli.analysis.assign_view import AssignmentView

log = logging.getLogger(__name__)

IOU_RANGE = (0.1, 0.95)  # the jittered boxes' IoU with their GT spreads over this
JITTER_PER_GT = 16  # J by default
BACKGROUND = 64  # B by default
MAX_SHIFT = 1.5  # the path's end: the box moved by 1.5 of the GT's side along one axis...
MAX_LOG_SCALE = math.log(2.0)  # ... and each side scaled by up to 2 or 1/2: IoU 0 there
BISECT_STEPS = 30  # the path position is found within 2**-30


def is_two_stage(model_cfg: Any) -> bool:
    """Whether the model config has an RPN and an RoI head."""
    return (getattr(model_cfg, "rpn_head", None) is not None
            and getattr(model_cfg, "roi_head", None) is not None)


# -- proposals --------------------------------------------------------------------------------

def _clip(boxes: Tensor, img_shape: tuple[int, int]) -> Tensor:
    """(..., 4) boxes clipped to the (h, w) image."""
    h, w = img_shape
    limits = boxes.new_tensor([w, h, w, h])  # (4,)
    return torch.minimum(boxes.clamp(min=0), limits)


def jitter_boxes(gt_boxes: Tensor, img_shape: tuple[int, int], per_gt: int,
                 generator: Optional[torch.Generator] = None,
                 iou_range: tuple[float, float] = IOU_RANGE) -> tuple[Tensor, Tensor]:
    """J = ``per_gt`` boxes around each GT (G, 4) -> (boxes (G, J, 4), target IoUs (G, J)).

    Box j of a GT aims at an IoU drawn uniformly in the j-th of J equal strata of
    ``iou_range``. It lies on a path that starts at the GT and ends, at position 1, moved by
    ``MAX_SHIFT`` times the GT's side along a random direction (one coordinate of it +-1) with
    its sides scaled by random factors in [1/2, 2]: there it no longer overlaps the GT. Every
    point of the path is clipped to the image, so the IoU goes from 1 to 0 continuously, and a
    bisection finds a position whose IoU is the target (at least it, within 2**-30 of the path).
    """
    gt = gt_boxes.float().reshape(-1, 4)  # (G, 4)
    num_gt, lo, hi = gt.shape[0], float(iou_range[0]), float(iou_range[1])
    if per_gt <= 0 or num_gt == 0:
        return gt.new_zeros(num_gt, max(per_gt, 0), 4), gt.new_zeros(num_gt, max(per_gt, 0))
    if not 0 < lo <= hi < 1:
        raise DetError(f"jitter IoU range {iou_range} must satisfy 0 < low <= high < 1")
    strata = torch.arange(per_gt, dtype=torch.float32)  # (J,)
    u = torch.rand(num_gt, per_gt, generator=generator)  # (G, J)
    target = lo + (hi - lo) * (strata + u) / per_gt  # (G, J): one per stratum
    angle = torch.rand(num_gt, per_gt, generator=generator) * (2 * math.pi)  # (G, J)
    direction = torch.stack([angle.cos(), angle.sin()], dim=-1)  # (G, J, 2)
    direction = direction / direction.abs().amax(dim=-1, keepdim=True)  # (G, J, 2) a side is +-1
    log_scale = (torch.rand(num_gt, per_gt, 2, generator=generator) * 2 - 1) * MAX_LOG_SCALE
    centre = ((gt[:, :2] + gt[:, 2:]) / 2)[:, None, :]  # (G, 1, 2)
    size = (gt[:, 2:] - gt[:, :2])[:, None, :]  # (G, 1, 2) w, h

    def box_at(position: Tensor) -> Tensor:  # (G, J) in [0, 1] -> (G, J, 4)
        t = position[..., None]  # (G, J, 1)
        middle = centre + t * MAX_SHIFT * direction * size  # (G, J, 2)
        half = size * torch.exp(t * log_scale) / 2  # (G, J, 2)
        return _clip(torch.cat([middle - half, middle + half], dim=-1), img_shape)

    def iou_at(position: Tensor) -> Tensor:  # (G, J) -> (G, J): each box with its own GT
        return box_iou(box_at(position), gt[:, None, :])[..., 0]

    low = torch.zeros(num_gt, per_gt)  # IoU >= target here (the GT itself) ...
    high = torch.ones(num_gt, per_gt)  # ... and < target here (no overlap)
    for _ in range(BISECT_STEPS):
        mid = (low + high) / 2  # (G, J)
        above = iou_at(mid) >= target  # (G, J)
        low = torch.where(above, mid, low)
        high = torch.where(above, high, mid)
    return box_at(low), target


def background_boxes(img_shape: tuple[int, int], count: int,
                     generator: Optional[torch.Generator] = None) -> Tensor:
    """``count`` random boxes (B, 4) over the (h, w) image: centres uniform in it, each side
    log-uniform between 1/16 (4 pixels at least) and 1/2 of the shorter image side, clipped."""
    h, w = img_shape
    shorter = float(min(h, w))
    small, large = math.log(max(shorter / 16, 4.0)), math.log(max(shorter / 2, 4.0))
    centre = torch.rand(count, 2, generator=generator) * torch.tensor([w, h], dtype=torch.float32)
    sides = torch.exp(small + (large - small) * torch.rand(count, 2, generator=generator))  # (B, 2)
    return _clip(torch.cat([centre - sides / 2, centre + sides / 2], dim=-1), img_shape)


def jitter_proposals(gt_boxes: Tensor, img_shape: tuple[int, int], per_gt: int = JITTER_PER_GT,
                     background: int = BACKGROUND,
                     generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
    """The jittered boxes of every GT, then the background ones -> (proposals (P, 4), source
    (P,) int64: the GT a box was jittered from, -1 for background), P = G * J + B."""
    jittered, _ = jitter_boxes(gt_boxes, img_shape, per_gt, generator)  # (G, J, 4)
    num_gt = jittered.shape[0]
    source = torch.arange(num_gt)[:, None].expand(-1, jittered.shape[1]).reshape(-1)  # (G*J,)
    boxes = torch.cat([jittered.reshape(-1, 4), background_boxes(img_shape, background, generator)])
    return boxes, torch.cat([source, torch.full((background,), -1, dtype=torch.long)])


def _normalize_step(pipeline: Sequence[Any]) -> Optional[dict[str, Any]]:
    """The pipeline's ``Normalize`` settings (inside ``MultiScaleFlipAug`` too), or None."""
    for step in pipeline:
        spec = step.model_dump() if hasattr(step, "model_dump") else dict(step)
        if spec.get("type") == "Normalize":
            return spec
        if spec.get("type") == "MultiScaleFlipAug":
            found = _normalize_step(spec.get("transforms", []))
            if found is not None:
                return found
    return None


def network_input(view: AssignmentView, pipeline: Sequence[Any]) -> ImageBatch:
    """The picture's image (H, W, 3) uint8 BGR as the network input of one image: the channel
    order ``LoadImageFromFile`` reads, then the pipeline's ``Normalize`` (module docstring)."""
    from detcli.analysis.pipeline_view import channel_order

    img = view.image.astype(np.float32)  # (H, W, 3) BGR
    if channel_order(pipeline) == "rgb":
        img = img[..., ::-1]
    norm = _normalize_step(pipeline)
    if norm is not None:
        if norm.get("to_rgb", True):
            img = img[..., ::-1]
        img = (img - np.asarray(norm["mean"], np.float32)) / np.asarray(norm["std"], np.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]  # (1, 3, H, W)
    return ImageBatch(tensor=tensor, img_shapes=[tuple(view.img_shape)],
                      ori_shapes=[tuple(view.ori_shape)],
                      scale_factors=torch.tensor([view.scale_factor], dtype=torch.float32),
                      metas=[{"filename": view.filename, "flip": view.flip}])


@torch.no_grad()
def checkpoint_proposals(cfg: Any, checkpoint: str | Path, view: AssignmentView,
                         pipeline: Sequence[Any], device: Optional[str] = "cpu") -> Tensor:
    """The RPN proposals (P, 4) of ``checkpoint``'s model on the view's image, with
    ``model.train_cfg.rpn_proposal``; CheckpointError when it does not fit the config."""
    from detcli.engine.tester import load_test_checkpoint, resolve_device
    from detcli.models.build import build_detector

    model = build_detector(cfg.model)
    if not hasattr(model, "rpn_head") or not hasattr(model.rpn_head, "predict_proposals"):
        raise DetError(f"{type(model).__name__} makes no proposals: --checkpoint applies to "
                       "two-stage detectors (an rpn_head and a roi_head)")
    load_test_checkpoint(model, checkpoint, class_names=list(view.class_names) or None)
    target = resolve_device(device)
    model.eval().to(target)
    images = network_input(view, pipeline).to(target)
    _, rpn_outputs = model(images.tensor)
    proposals = model.rpn_head.predict_proposals(rpn_outputs, images, cfg.model.train_cfg.rpn_proposal)
    boxes = proposals.boxes[0][proposals.valid[0]].float().cpu()  # (P, 4)
    log.info("%s: %d RPN proposals (train_cfg.rpn_proposal)", checkpoint, len(boxes))
    return boxes


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
        if not is_two_stage(model):
            raise ConfigError(f"{model.type} has no rpn_head and roi_head: the RoI sampling "
                              "view applies to two-stage detectors")
        if model.train_cfg is None:
            raise ConfigError("model.train_cfg = false: there is no RoI assigner and sampler "
                              "to show", hint="remove `train_cfg = false`, or set "
                                              "model.train_cfg.rcnn")
        rcnn = model.train_cfg.rcnn
        return cls(ASSIGNERS.build(rcnn.assigner), SAMPLERS.build(rcnn.sampler),
                   rcnn.assigner, rcnn.sampler)

    @property
    def num(self) -> Optional[int]:
        """The sampler's budget per image (None: it keeps every candidate)."""
        value = getattr(self.sampler, "num", None)
        return int(value) if value is not None else None

    @property
    def pos_fraction(self) -> Optional[float]:
        value = getattr(self.sampler, "pos_fraction", None)
        return float(value) if value is not None else None

    @property
    def max_pos(self) -> Optional[int]:
        """At most this many sampled positives: ``int(num * pos_fraction)``."""
        if self.num is None or self.pos_fraction is None:
            return None
        return int(getattr(self.sampler, "num_expected_pos", int(self.num * self.pos_fraction)))

    @property
    def add_gt(self) -> bool:
        return bool(getattr(self.sampler, "add_gt_as_proposals", False))


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
                "gts": [gt.to_dict() for gt in self.gts]}


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
    if bool(getattr(type(parts.assigner), "needs_predictions", False)):
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
        add_gt=parts.add_gt, settings=settings)
