"""Do a config's anchors fit its data? ``det analyze anchors``' coverage figure in one verdict.

T GT boxes. :func:`check_anchor_fit` runs the same analysis as ``det analyze anchors``
(:class:`~detcli.analysis.anchor_analysis.AnchorStudy`: the configured anchors and assigner on
the GT boxes at test size) and reduces it to the GTs it misses: those no anchor is positive
for (the zero-positive share) and, for an IoU-threshold assigner, those positive only through
low-quality matching (best IoU under ``pos_iou_thr``); and why: compared by sqrt(area) in network-input pixels, most of them smaller
than the smallest anchor ("too small"), larger than the largest ("too large"), or in between
(their shapes). The fix is the command that searches anchors for this data and prints the
lines to paste. A head without anchors or points, or data without a box, gives a verdict that
says the check does not apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional

import numpy as np

from detcli.analysis.anchor_analysis import AnchorStudy
from detcli.errors import ConfigError, DataError

Verdict = Literal["fits", "too_small", "too_large", "shapes", "not_applicable"]
POOR_SHARE = 0.1  # share of missed GTs (no positive, or a low-quality one only) that is too many
MAX_IMAGES = 1000  # images analysed; enough for the share to be stable


@dataclass
class AnchorFit:
    verdict: Verdict
    message: str  # one sentence for the user
    fix: Optional[str] = None  # the one line that fixes it
    zero_positive_share: Optional[float] = None
    num_gt: int = 0
    num_zero_positive: int = 0
    num_low_quality_only: int = 0  # positive only through low-quality matching (MaxIoU)
    anchor_sides: Optional[tuple[float, float]] = None  # smallest, largest sqrt(area), input px
    missed_median_side: Optional[float] = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _verdict(sides: np.ndarray, missed: np.ndarray, smallest: float, largest: float) -> Verdict:
    if not missed.any():
        return "fits"
    median = float(np.median(sides[missed]))
    if median < smallest:
        return "too_small"
    if median > largest:
        return "too_large"
    return "shapes"


def check_anchor_fit(cfg: Any, config_name: str, split: str = "train",
                     max_images: int = MAX_IMAGES) -> AnchorFit:
    """The verdict for ``cfg`` (a DetConfig) on split ``split``; see the module docstring."""
    try:
        report = AnchorStudy.from_config(cfg, split, max_images, config_name).report()
    except (ConfigError, DataError) as exc:
        return AnchorFit("not_applicable", f"anchor check skipped: {exc}")
    points = report.stats.point_based
    shapes = np.array([[w, h] for _, w, h in report.anchor_shapes], dtype=np.float64)  # (M, 2)
    anchor_side = np.sqrt(shapes.prod(axis=1))
    smallest, largest = float(anchor_side.min()), float(anchor_side.max())
    sides = np.sqrt(np.clip(report.gt_wh, 0, None).prod(axis=1))  # (T,)
    zero = report.zero_positive  # (T,)
    thr = report.stats.pos_iou_thr
    weak = ~zero & (report.best_iou < thr) if thr is not None else np.zeros_like(zero)  # (T,)
    missed = zero | weak
    share = float(missed.mean()) if len(missed) else 0.0
    prior = "point" if points else "anchor"
    fit = AnchorFit("fits", "", zero_positive_share=float(zero.mean()) if len(zero) else 0.0,
                    num_gt=int(len(zero)), num_zero_positive=int(zero.sum()),
                    num_low_quality_only=int(weak.sum()), anchor_sides=(smallest, largest),
                    missed_median_side=float(np.median(sides[missed])) if missed.any() else None)
    counted = f"{fit.num_zero_positive} of {fit.num_gt} GT boxes get no positive {prior}"
    if thr is not None:
        counted += (f" and {fit.num_low_quality_only} only a low-quality one (best IoU under "
                    f"pos_iou_thr {thr:g})")
    if share <= POOR_SHARE:
        fit.message = f"the {prior}s fit the data: {counted}"
        return fit
    fit.verdict = _verdict(sides, missed, smallest, largest)
    size = (f"their median {fit.missed_median_side:.0f} px against {prior}s of {smallest:.0f} to "
            f"{largest:.0f} px, sqrt of the area at the network input")
    why = {"too_small": "the objects are too small for them",
           "too_large": "the objects are too large for them",
           "shapes": "their sizes are in range, so their shapes (aspect ratios) do not fit"}[fit.verdict]
    fit.message = f"the {prior}s do not fit ({share:.0%} of the GT boxes): {counted}; {why} ({size})"
    if points:
        fit.fix = (f"det analyze anchors {config_name} --split {split}  # per object size and "
                   "level; change model.bbox_head.regress_ranges or the image scale")
    else:
        fit.fix = f"det analyze anchors {config_name} --split {split} --optimize"
    return fit
