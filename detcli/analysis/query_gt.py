"""What ``det analyze anchors`` reports for a query-based detector (DETR), which has no priors:
a split's GT against the queries and the input scale.

I images, T GT boxes over all of them, Q = ``model.num_queries``. Sizes are in network-input
pixels (the test-size Resize, :mod:`detcli.analysis.pipeline_geometry`), read from the
annotation file without decoding an image, as the anchor report reads them.

Training matches the Q queries to an image's GT one to one, so an image with more than Q GT
boxes has some that are never matched (no query learns them): the report counts GT per image
against Q and lists the images over it. What replaces the anchors' scales is the GT's size
against the image: each box's side sqrt(w h) in pixels, its share of the image,
sqrt(w h / (h_img w_img)), and the COCO size buckets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from detcli.analysis import capabilities as can
from detcli.analysis.anchor_gt import split_gt
from detcli.analysis.anchor_stats import QUANTILES, SIZE_BUCKETS, size_bucket

MAX_LISTED = 10  # images over num_queries named in the report


def _quantiles(values: np.ndarray, digits: int = 4) -> dict[str, float]:
    out = {"mean": round(float(values.mean()), digits), "min": round(float(values.min()), digits),
           "max": round(float(values.max()), digits)}
    out.update({name: round(float(np.quantile(values, q)), digits) for name, q in QUANTILES})
    return out


@dataclass
class QueryGTReport:
    """The report (module docstring); :meth:`to_dict` is its ``--json``."""

    detector: str  # the model's type, e.g. "DETR"
    num_queries: int
    match_costs: list[str]  # "Type(weight)" of train_cfg.assigner's costs
    dataset: dict[str, Any]  # type, source, num_images, num_images_analysed, num_gt
    input_scale: Optional[list[int]]  # the test Resize's (w, h); None without one
    gt_per_image: dict[str, float]  # mean, min, max and quantiles of GT boxes per image
    images_over_queries: int  # images with more GT boxes than num_queries
    gt_unmatchable: int  # the GT boxes beyond num_queries in those images
    over_queries: list[dict[str, Any]]  # the first MAX_LISTED of them: file, num_gt
    side_px: dict[str, float]  # sqrt(w h) in network-input pixels
    side_of_image: dict[str, float]  # sqrt(w h / (h_img w_img))
    size_buckets: dict[str, int]  # small / medium / large counts (COCO's areas)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"detector": self.detector, "priors": None, "num_queries": self.num_queries,
                "match_costs": self.match_costs, "dataset": self.dataset,
                "input_scale": self.input_scale, "gt_per_image": self.gt_per_image,
                "images_over_queries": self.images_over_queries,
                "gt_unmatchable": self.gt_unmatchable, "over_queries": self.over_queries,
                "gt_side_px": self.side_px, "gt_side_of_image": self.side_of_image,
                "size_buckets": self.size_buckets, "notes": self.notes}


def query_gt_report(cfg: Any, split: str = "val", max_images: Optional[int] = None) -> QueryGTReport:
    """The report for ``cfg`` (a DetConfig whose model has ``num_queries``) on ``split``."""
    num_queries = can.num_queries(cfg.model)
    if num_queries is None:
        raise ValueError(f"{cfg.model.type} has priors: analyse them with analyze_anchors")
    read = split_gt(cfg, split, max_images)
    gts = read.gts
    per_image = np.bincount(gts.image, minlength=gts.num_images)  # (I,)
    over = np.flatnonzero(per_image > num_queries)
    area = gts.area  # (T,)
    img_area = (gts.img_shape[:, 0] * gts.img_shape[:, 1]).astype(np.float64)[gts.image]  # (T,)
    buckets = np.bincount(size_bucket(area), minlength=len(SIZE_BUCKETS))
    scale = read.geometry.img_scale
    return QueryGTReport(
        detector=cfg.model.type, num_queries=num_queries,
        match_costs=can.match_cost_names(cfg.model.train_cfg),
        dataset={"type": read.type, "source": read.source, "num_images": read.num_images,
                 "num_images_analysed": gts.num_images, "num_gt": int(len(gts.labels))},
        input_scale=None if scale is None else [int(v) for v in scale],
        gt_per_image=_quantiles(per_image.astype(np.float64), 2),
        images_over_queries=int(over.size),
        gt_unmatchable=int((per_image[over] - num_queries).sum()),
        over_queries=[{"file": gts.files[i], "num_gt": int(per_image[i])} for i in over[:MAX_LISTED]],
        side_px=_quantiles(np.sqrt(area), 2),
        side_of_image=_quantiles(np.sqrt(area / img_area)),
        size_buckets={name: int(n) for name, n in zip(SIZE_BUCKETS, buckets)},
        notes=list(read.geometry.notes))
