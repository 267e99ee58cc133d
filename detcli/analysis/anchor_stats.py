"""The anchor report's numbers: per-group statistics of per-GT assignment results, typed.

T GT boxes, L levels, B = 20 histogram bins of width 0.05 over best IoU in [0, 1] (the last
bin holds 1.0). Areas and sizes are in network-input pixels; the zero-positive list also gives
each box in original-image pixels. :meth:`AnchorSummary.to_dict` is the JSON report documented
in docs/analyze.md; ``SCHEMA_VERSION`` changes when a key is renamed or removed. For an
assigner that ranks priors by the model's predictions (RTMDet's) the report is of the stand-in
predictions (:mod:`detcli.analysis.stand_in`), and ``assigner.predictions`` says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from detcli.analysis import capabilities as can
from detcli.analysis.stand_in import STAND_IN_TEXT

SCHEMA_VERSION = 1
HIST_BINS = 20
SMALL, MEDIUM = 32 ** 2, 96 ** 2  # COCO's area limits
SIZE_BUCKETS = ("small", "medium", "large")
QUANTILES = (("q05", 0.05), ("q25", 0.25), ("median", 0.5), ("q75", 0.75), ("q95", 0.95))


def _r(value: float, digits: int = 4) -> float:
    return round(float(value), digits)


def size_bucket(area: np.ndarray) -> np.ndarray:
    """(T,) areas -> (T,) int64: 0 small (< 32²), 1 medium (< 96²), 2 large."""
    return (area >= SMALL).astype(np.int64) + (area >= MEDIUM).astype(np.int64)


def histogram(iou: np.ndarray) -> list[int]:
    """Counts of (n,) IoUs in B equal bins over [0, 1]."""
    counts, _ = np.histogram(np.clip(iou, 0.0, 1.0), bins=HIST_BINS, range=(0.0, 1.0))
    return [int(c) for c in counts]


@dataclass
class BestIoU:
    """Best IoU of a group's GTs: mean, extremes and quantiles."""

    mean: float
    min: float
    q05: float
    q25: float
    median: float
    q75: float
    q95: float
    max: float

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "min": self.min, "q05": self.q05, "q25": self.q25,
                "median": self.median, "q75": self.q75, "q95": self.q95, "max": self.max}


@dataclass
class PositivesPerGT:
    mean: float
    median: float
    max: int

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "median": self.median, "max": self.max}


@dataclass
class GroupStats:
    """One group of GTs (all, a size bucket, the GTs landing on a level); the shares and
    summaries are None when the group is empty."""

    num_gt: int
    best_iou_histogram: list[int]  # B
    best_iou: Optional[BestIoU] = None
    best_iou_above_pos_thr_share: Optional[float] = None  # None also without a threshold
    positives_per_gt: Optional[PositivesPerGT] = None
    zero_positive_share: Optional[float] = None
    num_zero_positive: int = 0
    low_quality_only_share: Optional[float] = None
    level_share: list[Optional[float]] = field(default_factory=list)  # L: where they land
    positive_level_share: list[Optional[float]] = field(default_factory=list)  # L: their positives

    def to_dict(self, with_level_share: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "num_gt": self.num_gt, "best_iou_histogram": self.best_iou_histogram,
            "best_iou": None if self.best_iou is None else self.best_iou.to_dict(),
            "best_iou_above_pos_thr_share": self.best_iou_above_pos_thr_share,
            "positives_per_gt": (None if self.positives_per_gt is None
                                 else self.positives_per_gt.to_dict()),
            "zero_positive_share": self.zero_positive_share,
            "num_zero_positive": self.num_zero_positive,
            "low_quality_only_share": self.low_quality_only_share}
        if with_level_share:
            out["level_share"] = self.level_share
            out["positive_level_share"] = self.positive_level_share
        return out


@dataclass
class LevelStats:
    """One FPN level: the GTs whose best prior is on it, and its priors."""

    level: int
    stride: list  # (s_w, s_h)
    gts: GroupStats  # without level_share
    num_priors: int
    positive_priors: int
    negative_priors: int
    ignored_priors: int
    ignored_prior_share: float

    def to_dict(self) -> dict[str, Any]:
        return {**self.gts.to_dict(with_level_share=False), "level": self.level,
                "stride": self.stride, "num_priors": self.num_priors,
                "positive_priors": self.positive_priors, "negative_priors": self.negative_priors,
                "ignored_priors": self.ignored_priors,
                "ignored_prior_share": self.ignored_prior_share}


@dataclass
class ZeroPositiveGT:
    """A GT box without a positive prior: where it is, in both pixel spaces."""

    image: str
    image_id: Any
    box: list[float]  # original-image pixels
    size: list[float]  # (w, h), original-image pixels
    input_box: list[float]  # network-input pixels
    input_size: list[float]
    label: int
    class_name: Optional[str]
    best_iou: float
    best_level: int

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "image_id": self.image_id, "box": self.box,
                "size": self.size, "input_box": self.input_box, "input_size": self.input_size,
                "label": self.label, "class": self.class_name, "best_iou": self.best_iou,
                "best_level": self.best_level}


@dataclass
class PriorTotals:
    """The priors over every analysed image, and the shares the assigner gave each role."""

    total: int
    per_image_mean: float
    positive_share: float
    negative_share: float
    ignored_share: float
    ignored_per_image_mean: float

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "per_image_mean": self.per_image_mean,
                "positive_share": self.positive_share, "negative_share": self.negative_share,
                "ignored_share": self.ignored_share,
                "ignored_per_image_mean": self.ignored_per_image_mean}


@dataclass
class DatasetCounts:
    type: str
    source: str
    num_images: int
    num_images_analysed: int
    num_gt: int
    num_ignore_boxes: int

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "source": self.source, "num_images": self.num_images,
                "num_images_analysed": self.num_images_analysed, "num_gt": self.num_gt,
                "num_ignore_boxes": self.num_ignore_boxes}


@dataclass
class AnchorSummary:
    """The anchor report (``det analyze anchors``); :meth:`to_dict` is its JSON, documented in
    docs/analyze.md. The configuration it echoes (``geometry``, ``anchors``, ``assigner``,
    ``sampler``) stays the configs' own JSON."""

    config: Optional[str]
    split: str
    dataset: DatasetCounts
    geometry: dict[str, Any]
    anchors: dict[str, Any]
    assigner: dict[str, Any]
    sampler: dict[str, Any]
    pos_iou_thr: Optional[float]
    overall: GroupStats
    by_size: dict[str, GroupStats]  # SIZE_BUCKETS
    by_level: list[LevelStats]
    priors: PriorTotals
    zero_positive_gts: list[ZeroPositiveGT]

    @property
    def zero_positive_share(self) -> Optional[float]:
        return self.overall.zero_positive_share

    @property
    def point_based(self) -> bool:
        """Whether the priors are points (FCOS), measured as stride-sized cells."""
        return "prior_boxes" in self.anchors

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "config": self.config, "split": self.split, "dataset": self.dataset.to_dict(),
            "zero_positive_share": self.zero_positive_share,
            "geometry": self.geometry,
            "anchors": self.anchors,
            "assigner": self.assigner,
            "sampler": self.sampler,
            "pos_iou_thr": self.pos_iou_thr,
            "size_buckets": {"small": [0, SMALL], "medium": [SMALL, MEDIUM], "large": [MEDIUM, None],
                             "measured_in": "network-input pixels"},
            "histogram_edges": [_r(e) for e in np.linspace(0.0, 1.0, HIST_BINS + 1)],
            "overall": self.overall.to_dict(),
            "by_size": {name: g.to_dict() for name, g in self.by_size.items()},
            "by_level": [e.to_dict() for e in self.by_level],
            "priors": self.priors.to_dict(),
            "zero_positive_gts": [gt.to_dict() for gt in self.zero_positive_gts],
        }


def group_stats(mask: np.ndarray, stats: Any, pos_iou_thr: Optional[float],
                num_levels: int) -> GroupStats:
    """Statistics of the GTs in ``mask`` (T,) bool; ``None`` values when it selects none."""
    n = int(mask.sum())
    iou = stats.best_iou[mask]  # (n,)
    num_pos = stats.num_pos[mask]  # (n,)
    if n == 0:
        return GroupStats(n, histogram(iou), level_share=[None] * num_levels,
                          positive_level_share=[None] * num_levels)
    quantiles = np.quantile(iou, [q for _, q in QUANTILES])  # (5,)
    landed = np.bincount(stats.best_level[mask], minlength=num_levels)  # (L,)
    positives = stats.num_pos_per_level[mask].sum(axis=0)  # (L,): the group's positives
    total = int(positives.sum())
    return GroupStats(
        num_gt=n, best_iou_histogram=histogram(iou),
        best_iou=BestIoU(_r(iou.mean()), _r(iou.min()), *(_r(v) for v in quantiles), _r(iou.max())),
        best_iou_above_pos_thr_share=(None if pos_iou_thr is None
                                      else _r((iou >= pos_iou_thr).mean())),
        positives_per_gt=PositivesPerGT(_r(num_pos.mean(), 2), _r(np.median(num_pos), 1),
                                        int(num_pos.max())),
        zero_positive_share=_r((num_pos == 0).mean()),
        num_zero_positive=int((num_pos == 0).sum()),
        low_quality_only_share=_r(stats.low_quality_only[mask].mean()),
        level_share=[_r(c / n) for c in landed],
        positive_level_share=[_r(c / total) if total else None for c in positives])


def level_entries(stats: Any, strides: list, pos_iou_thr: Optional[float]) -> list[LevelStats]:
    """One entry per level: the GTs that land there (best prior on it) and its priors."""
    num_levels = len(strides)
    entries = []
    for level in range(num_levels):
        num_priors = int(stats.priors_per_level[level])
        entries.append(LevelStats(
            level=level, stride=list(strides[level]),
            gts=group_stats(stats.best_level == level, stats, pos_iou_thr, num_levels),
            num_priors=num_priors,
            positive_priors=int(stats.positive_per_level[level]),
            negative_priors=int(stats.negative_per_level[level]),
            ignored_priors=int(stats.ignored_per_level[level]),
            ignored_prior_share=_r(stats.ignored_per_level[level] / max(num_priors, 1)),
        ))
    return entries


def zero_positive_list(gts: Any, stats: Any) -> list[ZeroPositiveGT]:
    """Every GT without a positive prior, in dataset order."""
    out = []
    wh_in = gts.wh  # (T, 2)
    for t in np.flatnonzero(stats.num_pos == 0):
        k = int(gts.image[t])
        box = gts.boxes_ori[t]
        label = int(gts.labels[t])
        out.append(ZeroPositiveGT(
            image=gts.files[k], image_id=gts.image_ids[k],
            box=[_r(v, 2) for v in box], size=[_r(box[2] - box[0], 2), _r(box[3] - box[1], 2)],
            input_box=[_r(v, 2) for v in gts.boxes[t]],
            input_size=[_r(v, 2) for v in wh_in[t]],
            label=label, class_name=gts.classes[label] if label < len(gts.classes) else None,
            best_iou=_r(stats.best_iou[t]), best_level=int(stats.best_level[t])))
    return out


def anchors_section(parts: Any) -> dict[str, Any]:
    """The prior generator's config and shapes; for points (FCOS) the shapes are the
    stride-sized cells the IoU statistics use, and ``prior_boxes`` says so."""
    generator = parts.prior_generator
    cfg = parts.anchor_cfg.model_dump(mode="json") if parts.anchor_cfg is not None else {}
    shapes = [[[_r(w, 2), _r(h, 2)] for w, h in (b[:, 2:] - b[:, :2]).tolist()]
              for b in generator.base_anchors]  # L x A x (w, h)
    if getattr(parts, "point_based", False):
        return {**cfg, "prior_boxes": "stride-sized cells centred on the points",
                "num_base_priors": list(generator.num_base_priors), "shapes": shapes}
    return {**cfg, "scales_used": [_r(s) for s in generator.scales.tolist()],
            "base_sizes_used": [float(b) for b in generator.base_sizes],
            "num_base_priors": list(generator.num_base_priors), "shapes": shapes}


def build_summary(gts: Any, stats: Any, parts: Any, geometry: Any,
                  dataset: DatasetCounts, config: Optional[str], split: str) -> AnchorSummary:
    """The whole report (see docs/analyze.md); the anchors' and the assigner's configs say
    where they sit in the config (``config_key``: a two-stage detector's are its RPN's)."""
    thr = parts.pos_iou_thr
    num_levels = parts.num_levels
    every = np.ones(len(stats.best_iou), dtype=bool)  # (T,)
    buckets = size_bucket(gts.area)  # (T,)
    total_priors = int(stats.priors_per_level.sum())
    assigner = (parts.assigner_cfg.model_dump(mode="json") if parts.assigner_cfg is not None
                else {"type": type(parts.assigner).__name__})
    if can.needs_predictions(parts.assigner):  # RTMDet's: ranked by stand-in predictions
        assigner["predictions"] = STAND_IN_TEXT
    return AnchorSummary(
        config=config, split=split, dataset=dataset,
        geometry=geometry.to_dict(),
        anchors={**anchors_section(parts), "config_key": parts.anchor_key},
        assigner={**assigner, "config_key": f"{parts.train_cfg_key}.assigner"},
        sampler=(parts.sampler_cfg.model_dump(mode="json") if parts.sampler_cfg is not None
                 else {"type": type(parts.sampler).__name__}),
        pos_iou_thr=thr,
        overall=group_stats(every, stats, thr, num_levels),
        by_size={name: group_stats(buckets == i, stats, thr, num_levels)
                 for i, name in enumerate(SIZE_BUCKETS)},
        by_level=level_entries(stats, parts.strides, thr),
        priors=PriorTotals(
            total=total_priors,
            per_image_mean=_r(total_priors / max(gts.num_images, 1), 1),
            positive_share=_r(stats.positive_per_level.sum() / max(total_priors, 1), 6),
            negative_share=_r(stats.negative_per_level.sum() / max(total_priors, 1), 6),
            ignored_share=_r(stats.ignored_per_level.sum() / max(total_priors, 1), 6),
            ignored_per_image_mean=_r(stats.ignored_per_level.sum() / max(gts.num_images, 1), 1)),
        zero_positive_gts=zero_positive_list(gts, stats),
    )
