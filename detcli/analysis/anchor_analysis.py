"""Does the configured anchor design fit the dataset? ``det analyze anchors``'s library.

I images, T GT boxes, L levels, R priors per image, B histogram bins.

The dataset's GT boxes go through the test-size pipeline's Resize/Pad arithmetic (from the
annotation file's image sizes, no decoding: :mod:`detcli.analysis.pipeline_geometry`), so every
size below is in network-input pixels. Each image gets the configured anchors for its own
padded shape, and the configured assigner runs on them, batched over images of one padded shape
(:func:`detcli.analysis.assignment.assign_padded`). No network and no weights are involved.

The anchors and the assigner are the head's that assigns anchors: ``model.bbox_head`` with
``model.train_cfg``, or a two-stage detector's RPN (``model.rpn_head``, ``model.train_cfg.rpn``),
for which every GT is an "object" (:mod:`detcli.analysis.assignment`).

For each GT: its best IoU with any anchor, the level of that anchor (where the GT "lands"),
its positives (all, and per level) and whether they all came from low-quality matching. The
report (:meth:`AnchorReport.to_dict`, schema in docs/analyze.md) summarises them overall, by
COCO size bucket of the network-input area (small < 32², medium < 96², large) and by level,
and lists every GT with zero positives: boxes the detector can never learn.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import numpy as np
import torch

from detcli.analysis.anchor_gt import GTBatch, GTSet, make_batches, split_gt
from detcli.analysis.anchor_stats import AnchorSummary, DatasetCounts, build_summary
from detcli.analysis.assignment import AssignmentParts, assign_padded, iou_elements
from detcli.analysis.pipeline_geometry import PipelineGeometry
from detcli.task.assigners.assign_result import IGNORED, NEGATIVE

log = logging.getLogger(__name__)

SMALL_BATCH = 1 << 22  # IoU entries under which a batch runs on one CPU thread


@dataclass
class GTStats:
    """Per-GT results of one assignment of the whole GTSet, and prior counts per level."""

    best_iou: np.ndarray  # (T,) float32
    best_level: np.ndarray  # (T,) int64
    num_pos: np.ndarray  # (T,) int64
    num_pos_per_level: np.ndarray  # (T, L) int64
    low_quality_only: np.ndarray  # (T,) bool
    priors_per_level: np.ndarray  # (L,) int64: priors over all images
    positive_per_level: np.ndarray  # (L,) int64
    negative_per_level: np.ndarray  # (L,) int64
    ignored_per_level: np.ndarray  # (L,) int64

    @property
    def coverage(self) -> float:
        """Share of GTs with at least one positive (1.0 without GT)."""
        return float((self.num_pos > 0).mean()) if len(self.num_pos) else 1.0

    @property
    def mean_best_iou(self) -> float:
        return float(self.best_iou.mean()) if len(self.best_iou) else 0.0


@contextmanager
def _cpu_threads(parts: AssignmentParts, batches: list[GTBatch]) -> Iterator[None]:
    """One CPU thread when every batch is small: such tensors cost OpenMP more in start-up
    and spin-waiting than the work itself (30x on a busy 2-core machine)."""
    def elements(batch: GTBatch) -> int:
        num_priors = parts.priors(batch.pad_shape, batch.gt_boxes.device)[0].shape[0]
        return iou_elements(*batch.gt_labels.shape, num_priors)

    on_cpu = all(b.gt_boxes.device.type == "cpu" for b in batches)
    if not on_cpu or max(map(elements, batches), default=0) >= SMALL_BATCH:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _assign_into(parts: AssignmentParts, batch: GTBatch, per_gt: tuple,
                 per_level: torch.Tensor) -> None:
    """Assign one batch; write its per-GT results into the flat (T, ...) tensors ``per_gt``
    and add its prior counts to ``per_level`` (4, L)."""
    best_iou, best_level, num_pos_per_level, low_quality = per_gt
    result = assign_padded(parts, batch.gt_boxes, batch.gt_labels, batch.pad_shape,
                           batch.ignore_boxes, batch.ignore_valid, batch.img_shapes)
    valid = batch.gt_ids >= 0  # (n, G)
    ids = batch.gt_ids[valid]  # (t,)
    best_iou[ids] = result.best_iou[valid].cpu()
    best_level[ids] = result.best_level[valid].cpu()
    num_pos_per_level[ids] = result.num_pos_per_level[valid].cpu()  # (t, L)
    low_quality[ids] = result.low_quality_only[valid].cpu()
    codes = result.gt_index  # (n, R)
    counts = torch.stack([torch.ones_like(codes[0]) * codes.shape[0], (codes >= 0).sum(0),
                          (codes == NEGATIVE).sum(0), (codes == IGNORED).sum(0)])  # (4, R)
    per_level.index_add_(1, result.level.cpu(), counts.cpu())  # (4, L)


@torch.no_grad()
def run_assignment(parts: AssignmentParts, batches: list[GTBatch], num_gt: int) -> GTStats:
    """Assign every batch; gather per-GT results into flat (T,) arrays."""
    num_levels = parts.num_levels
    best_iou = torch.zeros(num_gt)
    best_level = torch.zeros(num_gt, dtype=torch.long)
    num_pos_per_level = torch.zeros(num_gt, num_levels, dtype=torch.long)
    low_quality = torch.zeros(num_gt, dtype=torch.bool)
    per_level = torch.zeros(4, num_levels, dtype=torch.long)  # priors, pos, neg, ignored
    with _cpu_threads(parts, batches):
        for batch in batches:
            _assign_into(parts, batch, (best_iou, best_level, num_pos_per_level, low_quality),
                         per_level)
    totals = per_level.numpy()
    return GTStats(
        best_iou=best_iou.numpy(), best_level=best_level.numpy(),
        num_pos=num_pos_per_level.sum(1).numpy(), num_pos_per_level=num_pos_per_level.numpy(),
        low_quality_only=low_quality.numpy(), priors_per_level=totals[0],
        positive_per_level=totals[1], negative_per_level=totals[2], ignored_per_level=totals[3],
    )


def anchor_shapes(parts: AssignmentParts) -> list[tuple[int, float, float]]:
    """(level, width, height) of every base anchor, in network-input pixels."""
    shapes = []
    for level, base in enumerate(parts.prior_generator.base_anchors):  # L x (A, 4)
        wh = (base[:, 2:] - base[:, :2]).tolist()  # (A, 2)
        shapes += [(level, float(w), float(h)) for w, h in wh]
    return shapes


@dataclass
class AnchorReport:
    """The analysis: ``stats`` is the report (its JSON: :attr:`summary`); the arrays feed the
    plots."""

    stats: AnchorSummary
    gt_wh: np.ndarray  # (T, 2) network-input pixels
    best_iou: np.ndarray  # (T,)
    zero_positive: np.ndarray  # (T,) bool
    anchor_shapes: list[tuple[int, float, float]] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, Any]:
        """The JSON report (docs/analyze.md)."""
        return self.stats.to_dict()

    def to_dict(self) -> dict[str, Any]:
        return self.summary

    @property
    def zero_positive_share(self) -> float:
        return float(self.stats.zero_positive_share)


@dataclass
class AnchorStudy:
    """A dataset's GT, prepared once; :meth:`report` analyses it under any anchor design."""

    parts: AssignmentParts
    geometry: PipelineGeometry
    gts: GTSet
    batches: list[GTBatch]
    counts: DatasetCounts  # the dataset facts the report gives
    config_name: Optional[str]
    split: str

    @classmethod
    def from_config(cls, cfg: Any, split: str = "val", max_images: Optional[int] = None,
                    config_name: Optional[str] = None) -> AnchorStudy:
        """Build the parts from ``cfg`` (a DetConfig), read split ``split``'s GT."""
        parts = AssignmentParts.from_config(cfg)  # first: an anchor-free head stops here
        read = split_gt(cfg, split, max_images)
        geometry, gts = read.geometry, read.gts
        shapes = {tuple(int(v) for v in s) for s in gts.pad_shape}
        num_priors = {s: int(parts.priors(s)[0].shape[0]) for s in shapes}
        counts = DatasetCounts(type=read.type, source=read.source,
                               num_images=read.num_images, num_images_analysed=gts.num_images,
                               num_gt=int(len(gts.labels)),
                               num_ignore_boxes=int(len(gts.ignore_image)))
        log.info("analysing %d GT boxes of %d images (%d padded shapes)",
                 len(gts.labels), gts.num_images, len(shapes))
        return cls(parts, geometry, gts, make_batches(gts, num_priors), counts, config_name, split)

    def assign(self, parts: Optional[AssignmentParts] = None) -> GTStats:
        return run_assignment(parts or self.parts, self.batches, len(self.gts.labels))

    def report(self, parts: Optional[AssignmentParts] = None,
               stats: Optional[GTStats] = None) -> AnchorReport:
        """The full report under ``parts`` (default: the configured ones)."""
        parts = parts or self.parts
        stats = stats if stats is not None else self.assign(parts)
        summary = build_summary(self.gts, stats, parts, self.geometry, self.counts,
                                self.config_name, self.split)
        return AnchorReport(stats=summary, gt_wh=self.gts.wh, best_iou=stats.best_iou,
                            zero_positive=stats.num_pos == 0, anchor_shapes=anchor_shapes(parts))


def analyze_anchors(cfg: Any, split: str = "val", max_images: Optional[int] = None,
                    config_name: Optional[str] = None) -> AnchorReport:
    """Analyse the configured anchors on split ``split`` of ``cfg`` (a DetConfig)."""
    return AnchorStudy.from_config(cfg, split, max_images, config_name).report()
