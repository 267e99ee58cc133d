"""The anchor report's numbers: per-group statistics of per-GT assignment results, as JSON data.

T GT boxes, L levels, B = 20 histogram bins of width 0.05 over best IoU in [0, 1] (the last
bin holds 1.0). Areas and sizes are in network-input pixels; the zero-positive list also gives
each box in original-image pixels. The layout of the returned dict is documented in
docs/analyze.md; ``SCHEMA_VERSION`` changes when a key is renamed or removed.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

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


def group_stats(mask: np.ndarray, stats: Any, pos_iou_thr: Optional[float],
                num_levels: int) -> dict[str, Any]:
    """Statistics of the GTs in ``mask`` (T,) bool; ``None`` values when it selects none."""
    n = int(mask.sum())
    iou = stats.best_iou[mask]  # (n,)
    num_pos = stats.num_pos[mask]  # (n,)
    out: dict[str, Any] = {"num_gt": n, "best_iou_histogram": histogram(iou)}
    if n == 0:
        out.update(best_iou=None, best_iou_above_pos_thr_share=None, positives_per_gt=None,
                   zero_positive_share=None, num_zero_positive=0, low_quality_only_share=None,
                   level_share=[None] * num_levels)
        return out
    quantiles = np.quantile(iou, [q for _, q in QUANTILES])  # (5,)
    out["best_iou"] = {"mean": _r(iou.mean()), "min": _r(iou.min()),
                       **{name: _r(v) for (name, _), v in zip(QUANTILES, quantiles)},
                       "max": _r(iou.max())}
    out["best_iou_above_pos_thr_share"] = (None if pos_iou_thr is None
                                           else _r((iou >= pos_iou_thr).mean()))
    out["positives_per_gt"] = {"mean": _r(num_pos.mean(), 2), "median": _r(np.median(num_pos), 1),
                               "max": int(num_pos.max())}
    out["zero_positive_share"] = _r((num_pos == 0).mean())
    out["num_zero_positive"] = int((num_pos == 0).sum())
    out["low_quality_only_share"] = _r(stats.low_quality_only[mask].mean())
    landed = np.bincount(stats.best_level[mask], minlength=num_levels)  # (L,)
    out["level_share"] = [_r(c / n) for c in landed]
    return out


def level_entries(stats: Any, strides: list, pos_iou_thr: Optional[float]) -> list[dict[str, Any]]:
    """One entry per level: the GTs that land there (best prior on it) and its priors."""
    num_levels = len(strides)
    entries = []
    for level in range(num_levels):
        entry = group_stats(stats.best_level == level, stats, pos_iou_thr, num_levels)
        del entry["level_share"]
        num_priors = int(stats.priors_per_level[level])
        entry.update(
            level=level, stride=list(strides[level]),
            num_priors=num_priors,
            positive_priors=int(stats.positive_per_level[level]),
            negative_priors=int(stats.negative_per_level[level]),
            ignored_priors=int(stats.ignored_per_level[level]),
            ignored_prior_share=_r(stats.ignored_per_level[level] / max(num_priors, 1)),
        )
        entries.append(entry)
    return entries


def zero_positive_list(gts: Any, stats: Any) -> list[dict[str, Any]]:
    """Every GT without a positive prior, in dataset order."""
    out = []
    wh_in = gts.wh  # (T, 2)
    for t in np.flatnonzero(stats.num_pos == 0):
        k = int(gts.image[t])
        box = gts.boxes_ori[t]
        out.append({
            "image": gts.files[k], "image_id": gts.image_ids[k],
            "box": [_r(v, 2) for v in box], "size": [_r(box[2] - box[0], 2), _r(box[3] - box[1], 2)],
            "input_box": [_r(v, 2) for v in gts.boxes[t]],
            "input_size": [_r(v, 2) for v in wh_in[t]],
            "label": int(gts.labels[t]), "class": gts.classes[int(gts.labels[t])]
            if int(gts.labels[t]) < len(gts.classes) else None,
            "best_iou": _r(stats.best_iou[t]), "best_level": int(stats.best_level[t]),
        })
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
                  context: dict[str, Any]) -> dict[str, Any]:
    """The whole report as JSON-able data (see docs/analyze.md)."""
    thr = parts.pos_iou_thr
    num_levels = parts.num_levels
    every = np.ones(len(stats.best_iou), dtype=bool)  # (T,)
    buckets = size_bucket(gts.area)  # (T,)
    total_priors = int(stats.priors_per_level.sum())
    overall = group_stats(every, stats, thr, num_levels)
    return {
        "schema_version": SCHEMA_VERSION,
        **context,
        "zero_positive_share": overall["zero_positive_share"],
        "geometry": geometry.to_dict(),
        "anchors": anchors_section(parts),
        "assigner": (parts.assigner_cfg.model_dump(mode="json") if parts.assigner_cfg is not None
                     else {"type": type(parts.assigner).__name__}),
        "sampler": (parts.sampler_cfg.model_dump(mode="json") if parts.sampler_cfg is not None
                    else {"type": type(parts.sampler).__name__}),
        "pos_iou_thr": thr,
        "size_buckets": {"small": [0, SMALL], "medium": [SMALL, MEDIUM], "large": [MEDIUM, None],
                         "measured_in": "network-input pixels"},
        "histogram_edges": [_r(e) for e in np.linspace(0.0, 1.0, HIST_BINS + 1)],
        "overall": overall,
        "by_size": {name: group_stats(buckets == i, stats, thr, num_levels)
                    for i, name in enumerate(SIZE_BUCKETS)},
        "by_level": level_entries(stats, parts.strides, thr),
        "priors": {
            "total": total_priors,
            "per_image_mean": _r(total_priors / max(gts.num_images, 1), 1),
            "positive_share": _r(stats.positive_per_level.sum() / max(total_priors, 1), 6),
            "negative_share": _r(stats.negative_per_level.sum() / max(total_priors, 1), 6),
            "ignored_share": _r(stats.ignored_per_level.sum() / max(total_priors, 1), 6),
            "ignored_per_image_mean": _r(stats.ignored_per_level.sum() / max(gts.num_images, 1), 1),
        },
        "zero_positive_gts": zero_positive_list(gts, stats),
    }
