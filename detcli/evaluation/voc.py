"""Pascal VOC box mAP (MMDetection 3.x ``VOCMetric`` / ``eval_map``), for any dataset.

I images, K classes, D detections of one image (Dk of class k over all images), G GT boxes and
Ig ignore boxes of one image, T IoU thresholds.

Matching, per image and class, at each IoU threshold ``thr`` (``tpfp_default``):

1. every detection is paired with the GT box of its class it overlaps most (GT boxes before
   ignore boxes on a tie), whether or not that GT is already taken;
2. in score order (stable: ties keep the detection order), a detection whose best IoU is below
   ``thr`` is a false positive (FP); one whose best is an ignore box (VOC ``difficult``, the
   dataset's ``bboxes_ignore``) counts as nothing; one whose best is a free GT is a true
   positive (TP) and takes it; one whose best GT is taken is a FP (a duplicate), even when
   another GT would have been free.

Per class, the detections of all images are ranked by score (stable: image order, then the
detection order), ``recall = cumsum(TP) / num_gts`` and ``precision = cumsum(TP) /
cumsum(TP + FP)`` over the ranking (``num_gts``: GT boxes of the class, ignore boxes not
counted; detections matching ignore boxes are left out of the ranking, which changes neither
AP since they leave both sums as they were). The AP of a class (:func:`average_precision`):

- ``"11points"`` (VOC2007): the mean over ``t = 0, 0.1, ..., 1`` of the highest precision at
  recall >= t (0 where recall never reaches t);
- ``"area"`` (VOC2010+): the area under the precision envelope (precision made non-increasing
  from the right), summed over the recall steps, with (0, 0) and (1, 0) added at the ends.

With ``use_legacy_coordinate`` (``VOCMetric``'s choice, the devkit's inclusive pixels) widths,
heights and intersections get ``+ 1``. IoUs are computed in float64 (MMDetection: float32).

Metric keys: ``voc_mAP`` (the configured ``eval_mode``, the mean over IoU thresholds of the
mean AP over classes with GT), ``voc_AP50`` ... (that mode, one per threshold: ``voc_AP`` +
the threshold in percent), ``voc_mAP_11points`` and ``voc_mAP_area`` (both modes, mean over
thresholds, whichever is configured). A value is -1.0 when no class has GT (MMDetection: 0).
``per_class`` lists ``{"class", "voc_num_gts", "voc_num_dets", "voc_recall", "voc_AP"}`` in
label order: GT count (ignore boxes not counted), detections, the final recall and the AP in
the configured mode (both means over thresholds); recall and AP are None for a class without GT.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from detcli.evaluation.coco import dataset_result_ids, detections_to_coco
from detcli.evaluation.config import VocMetricConfig
from detcli.errors import ConfigError, DetError
from detcli.structures.detections import Detections

log = logging.getLogger(__name__)

EVAL_MODES = ("11points", "area")
ANY_CLASS = -1  # the label of an ignore box whose class the dataset cannot tell


@dataclass(frozen=True)
class ImageGT:
    """One image's GT: boxes (G, 4) with labels (G,), ignore boxes (Ig, 4) with labels (Ig,)
    (``ANY_CLASS`` for an ignore box of every class)."""

    boxes: np.ndarray  # (G, 4) x1, y1, x2, y2
    labels: np.ndarray  # (G,)
    ignore_boxes: np.ndarray  # (Ig, 4)
    ignore_labels: np.ndarray  # (Ig,)


@dataclass(frozen=True)
class RankedDetections:
    """One class's detections over all images at one IoU threshold, best score first,
    those matching ignore boxes left out."""

    num_gts: int
    scores: np.ndarray  # (Dk',)
    tp: np.ndarray  # (Dk',) bool; fp = ~tp

    @property
    def recall(self) -> np.ndarray:
        """(Dk',) cumulative TP / num_gts."""
        return np.cumsum(self.tp) / max(self.num_gts, 1)

    @property
    def precision(self) -> np.ndarray:
        """(Dk',) cumulative TP / detections so far."""
        return np.cumsum(self.tp) / np.arange(1, len(self.tp) + 1)


@dataclass(frozen=True)
class VocClassAP:
    """One class's VOC numbers, each the mean over the IoU thresholds; recall and AP are None
    without GT."""

    name: str
    num_gts: int
    num_dets: int
    recall: float | None  # the recall the ranking ends at
    ap: float | None  # configured eval_mode

    def to_json(self) -> dict[str, Any]:
        return {"class": self.name, "voc_num_gts": self.num_gts, "voc_num_dets": self.num_dets,
                "voc_recall": self.recall, "voc_AP": self.ap}


def box_iou(boxes1: np.ndarray, boxes2: np.ndarray, *, legacy: bool) -> np.ndarray:
    """(N, 4), (M, 4) x1, y1, x2, y2 -> (N, M) IoU; ``legacy`` adds 1 to every length."""
    extra = 1.0 if legacy else 0.0
    a = boxes1.astype(np.float64)[:, None, :]  # (N, 1, 4)
    b = boxes2.astype(np.float64)[None, :, :]  # (1, M, 4)
    inter_w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + extra,
                      0, None)  # (N, M)
    inter_h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + extra,
                      0, None)
    inter = inter_w * inter_h
    area1 = (a[..., 2] - a[..., 0] + extra) * (a[..., 3] - a[..., 1] + extra)  # (N, 1)
    area2 = (b[..., 2] - b[..., 0] + extra) * (b[..., 3] - b[..., 1] + extra)  # (1, M)
    union = np.maximum(area1 + area2 - inter, np.finfo(np.float32).eps)
    return inter / union


def match_image(det_boxes: np.ndarray, det_scores: np.ndarray, det_labels: np.ndarray,
                gt: ImageGT, iou_thrs: Sequence[float], *, legacy: bool) -> np.ndarray:
    """The outcome of each detection of one image at each threshold (module docstring).

    det_boxes (D, 4), det_scores (D,), det_labels (D,) -> (T, D) int8: 1 TP, 0 FP, -1 matched an
    ignore box (left out).
    """
    all_boxes = np.concatenate([gt.boxes.reshape(-1, 4), gt.ignore_boxes.reshape(-1, 4)])
    all_labels = np.concatenate([gt.labels, gt.ignore_labels])  # (G + Ig,)
    is_ignore = np.arange(len(all_boxes)) >= len(gt.boxes)  # (G + Ig,)
    outcome = np.zeros((len(iou_thrs), len(det_boxes)), dtype=np.int8)  # FP unless matched
    if len(det_boxes) == 0 or len(all_boxes) == 0:
        return outcome
    same_class = (det_labels[:, None] == all_labels[None, :]) | (all_labels[None, :] == ANY_CLASS)
    ious = np.where(same_class, box_iou(det_boxes, all_boxes, legacy=legacy), -1.0)  # (D, G+Ig)
    best_gt = ious.argmax(axis=1)  # (D,) first of equal IoUs: GT before ignore
    best_iou = ious[np.arange(len(det_boxes)), best_gt]  # (D,)
    order = np.argsort(-det_scores, kind="stable")  # (D,)
    for t, thr in enumerate(iou_thrs):
        hit = best_iou >= thr  # (D,)
        outcome[t, hit & is_ignore[best_gt]] = -1
        on_gt = order[(hit & ~is_ignore[best_gt])[order]]  # detections on a GT, score order
        _, first = np.unique(best_gt[on_gt], return_index=True)  # the first to reach each GT
        outcome[t, on_gt[first]] = 1  # the later ones stay FP: duplicates
    return outcome


def average_precision(recall: np.ndarray, precision: np.ndarray, mode: str) -> float:
    """AP of one ranking: recall (D,), precision (D,) -> float (module docstring for modes)."""
    if mode == "11points":
        points = [precision[recall >= t].max(initial=0.0) for t in np.arange(0, 1 + 1e-3, 0.1)]
        return float(np.sum(points) / 11)
    if mode != "area":
        raise ConfigError(f"eval_mode {mode!r}: expected one of {EVAL_MODES}")
    mrec = np.concatenate([[0.0], recall, [1.0]])  # (D + 2,)
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # the envelope: max of what follows
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])  # where recall moves
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def image_gt(dataset: Any, i: int) -> ImageGT:
    """GT of dataset image ``i``; ignore boxes of every class when the dataset has no
    ``get_ignore_labels`` (as the COCO evaluation treats them)."""
    ann = dataset.get_ann_info(i)
    ignore = np.asarray(ann.get("bboxes_ignore", np.zeros((0, 4))), dtype=np.float64).reshape(-1, 4)
    if hasattr(dataset, "get_ignore_labels"):
        ignore_labels = np.asarray(dataset.get_ignore_labels(i), dtype=np.int64).reshape(-1)
    else:
        ignore_labels = np.full(len(ignore), ANY_CLASS, dtype=np.int64)
    return ImageGT(np.asarray(ann["bboxes"], dtype=np.float64).reshape(-1, 4),
                   np.asarray(ann["labels"], dtype=np.int64).reshape(-1), ignore, ignore_labels)


class VocEvaluator:
    """VOC mAP of detections on one dataset's images and classes (module docstring)."""

    def __init__(self, dataset: Any, *, iou_thrs: Sequence[float] = (0.5,),
                 eval_mode: str = "11points", use_legacy_coordinate: bool = True) -> None:
        if eval_mode not in EVAL_MODES:
            raise ConfigError(f"eval_mode {eval_mode!r}: expected one of {EVAL_MODES}")
        self.iou_thrs = tuple(float(t) for t in iou_thrs)  # T
        self.eval_mode = eval_mode
        self.legacy = use_legacy_coordinate
        self._names = [str(c) for c in dataset.CLASSES]
        self.img_ids, self.cat_ids = dataset_result_ids(dataset)
        self.gts = [image_gt(dataset, i) for i in range(len(self.img_ids))]  # I
        labels = np.concatenate([g.labels for g in self.gts]) if self.gts else np.zeros(0, int)
        self.num_gts = np.bincount(labels, minlength=len(self._names))  # (K,)
        if not self.num_gts.any():
            source = str(getattr(dataset, "source", type(dataset).__name__))
            log.warning("%s has no GT boxes: every VOC metric will be -1", source)

    @classmethod
    def from_config(cls, cfg: VocMetricConfig, dataset: Any) -> VocEvaluator:
        return cls(dataset, iou_thrs=cfg.thresholds, eval_mode=cfg.eval_mode,
                   use_legacy_coordinate=cfg.use_legacy_coordinate)

    @property
    def class_names(self) -> list[str]:
        return list(self._names)

    def results(self, detections: Sequence[Detections]) -> list[dict[str, Any]]:
        """COCO results of ``detections`` (one per dataset image), as the COCO evaluation's."""
        return detections_to_coco(detections, self.img_ids, self.cat_ids)

    def rank(self, detections: Sequence[Detections]) -> list[list[RankedDetections]]:
        """(T, K) rankings of one :class:`Detections` per dataset image."""
        if len(detections) != len(self.gts):
            raise DetError(f"got detections for {len(detections)} images but the dataset has "
                             f"{len(self.gts)}; evaluation needs one entry per image")
        outcomes, scores, labels = [], [], []
        for dets, gt in zip(detections, self.gts):
            dets = dets.to("cpu")
            boxes = dets.boxes.double().numpy().reshape(-1, 4)  # (D, 4)
            s, lab = dets.scores.double().numpy(), dets.labels.numpy()  # (D,), (D,)
            outcomes.append(match_image(boxes, s, lab, gt, self.iou_thrs, legacy=self.legacy))
            scores.append(s)
            labels.append(lab)
        outcome = np.concatenate(outcomes, axis=1)  # (T, ΣD) image order
        score, label = np.concatenate(scores), np.concatenate(labels)  # (ΣD,)
        ranked = []
        for t in range(len(self.iou_thrs)):
            row = []
            for k in range(len(self._names)):
                mine = np.flatnonzero((label == k) & (outcome[t] >= 0))  # image order
                mine = mine[np.argsort(-score[mine], kind="stable")]
                row.append(RankedDetections(int(self.num_gts[k]), score[mine], outcome[t, mine] == 1))
            ranked.append(row)
        return ranked

    def evaluate(self, detections: Sequence[Detections]) -> dict[str, Any]:
        """The metrics (module docstring) of one :class:`Detections` per dataset image."""
        ranked = self.rank(detections)
        has_gt = self.num_gts > 0  # (K,)
        ap = {mode: np.array([[average_precision(r.recall, r.precision, mode) for r in row]
                              for row in ranked]) for mode in EVAL_MODES}  # mode -> (T, K)
        recall = np.array([[r.recall[-1] if len(r.tp) else 0.0 for r in row] for row in ranked])

        def mean_ap(values: np.ndarray) -> float:  # (K,) -> over classes with GT
            return float(values[has_gt].mean()) if has_gt.any() else -1.0

        metrics: dict[str, Any] = {
            "voc_mAP": float(np.mean([mean_ap(a) for a in ap[self.eval_mode]]))}
        for thr, per_thr in zip(self.iou_thrs, ap[self.eval_mode]):
            metrics[f"voc_AP{round(thr * 100, 2):g}"] = mean_ap(per_thr)
        for mode in EVAL_MODES:
            metrics[f"voc_mAP_{mode}"] = float(np.mean([mean_ap(a) for a in ap[mode]]))
        num_dets = np.bincount(np.concatenate([d.labels.cpu().numpy() for d in detections])
                               if detections else np.zeros(0, int), minlength=len(self._names))
        metrics["per_class"] = [
            VocClassAP(name, int(self.num_gts[k]), int(num_dets[k]),
                       float(recall[:, k].mean()) if has_gt[k] else None,
                       float(ap[self.eval_mode][:, k].mean()) if has_gt[k] else None).to_json()
            for k, name in enumerate(self._names)]
        return metrics
