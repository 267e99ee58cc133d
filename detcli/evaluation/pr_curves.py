"""Precision-recall curves at one IoU threshold, read from pycocotools' accumulated precision.

K classes, R = 101 recall thresholds (0.00:0.01:1.00). Nothing is recomputed: a class's curve is
``precision[t, :, k, area all, maxDets 100]`` of :class:`~detcli.evaluation.coco.CocoAccumulated`,
i.e. COCO's interpolated precision (the best precision at any recall >= r) at each recall
threshold r, 0 beyond the highest recall the class reaches. Its AP is the curve's mean, the
number the per-class table shows as AP50 / AP75.

The all-classes curve is, at each recall threshold, the mean of the curves of the classes that
have GT (pycocotools marks the others -1); its mean is COCO's ``bbox_mAP_50`` (``_75``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from detcli.evaluation.coco import CocoAccumulated

PR_IOUS = (0.5, 0.75)  # the IoU thresholds det test --plots draws


@dataclass
class PRCurves:
    """Every class's precision-recall curve at IoU ``iou`` (area all, maxDets 100)."""

    iou: float
    recall: np.ndarray  # (R,) the recall thresholds
    precision: np.ndarray  # (K, R) per class; NaN for a class without GT
    class_names: list[str]  # K
    ap: list[float | None]  # K, mean of the class's curve; None without GT
    mean_precision: np.ndarray  # (R,) over the classes with GT; NaN when none has GT
    mean_ap: float | None  # mean of mean_precision (bbox_mAP_50 / _75); None when no GT

    def to_json(self) -> dict[str, Any]:
        def values(curve: np.ndarray) -> list[float] | None:
            return None if np.isnan(curve).all() else [round(float(p), 6) for p in curve]

        return {"iou": self.iou, "recall": [round(float(r), 6) for r in self.recall],
                "all": {"AP": self.mean_ap, "precision": values(self.mean_precision)},
                "classes": [{"class": name, "AP": ap, "precision": values(curve)}
                            for name, ap, curve in zip(self.class_names, self.ap, self.precision)]}


def pr_curves(acc: CocoAccumulated, class_names: Sequence[str], iou: float) -> PRCurves:
    """The curves at IoU threshold ``iou`` (one COCOeval accumulated, e.g. 0.5 or 0.75)."""
    t = acc.iou_index(iou)
    area_all, max_dets_100 = acc.area_names.index("all"), len(acc.max_dets) - 1
    raw = acc.precision[t, :, :, area_all, max_dets_100].T  # (K, R), -1 where no GT
    has_gt = (raw > -1).all(axis=1)  # (K,) pycocotools fills a class's row whole or not at all
    precision = np.where(has_gt[:, None], raw, np.nan)  # (K, R)
    ap = [float(curve.mean()) if ok else None for curve, ok in zip(precision, has_gt)]
    if has_gt.any():
        mean_precision = precision[has_gt].mean(axis=0)  # (R,)
        mean_ap: float | None = float(mean_precision.mean())
    else:
        mean_precision, mean_ap = np.full(raw.shape[1], np.nan), None
    return PRCurves(iou=float(iou), recall=np.asarray(acc.rec_thrs, dtype=float),
                    precision=precision, class_names=list(class_names), ap=ap,
                    mean_precision=mean_precision, mean_ap=mean_ap)
