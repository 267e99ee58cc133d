"""COCO box and mask evaluation through pycocotools, for any dataset: detections in, metrics out.

I images in the dataset, K classes, D detections of one image, G GT boxes and Ig ignore boxes of
one image, T = 10 IoU thresholds (0.50:0.05:0.95), R = 101 recall thresholds, A = 4 area ranges
(all, small, medium, large), M = 3 ``maxDets`` (1, 10, 100).

Ground truth comes from the dataset itself, so every format is evaluated the same way:

- a COCO dataset (it has ``.coco`` and ``.cat_ids``) is evaluated against its own annotation
  file, as MMDetection does: COCO ``area`` (the mask area) decides small / medium / large, and
  crowd annotations are crowd regions of their category;
- any other dataset is turned into an in-memory COCO index from ``img_infos`` and
  ``get_ann_info(i)``: category id = label + 1, ``area`` = box width x height, each ignore box a
  crowd region (``iscrowd = 1``) of its class (of every class when the dataset cannot tell).

Only the dataset's images (``img_infos``, in order) and classes (``cat_ids``) are evaluated; an
image without GT and an image without detections both count, as COCO counts them. Detections
(original-image pixels, :class:`~detcli.structures.detections.Detections`) become COCO results
``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` (``w = x2 - x1``, no +1).

Masks (``iou_type = "segm"``, :mod:`detcli.evaluation.segm`): the same evaluation with
pycocotools' iouType "segm" on the detections' RLE masks, MMDetection's ``CocoMetric`` with
metric "segm": keys ``segm_mAP`` ... ``segm_AR_l@100``, per-class keys ``segm_AP`` ...
``segm_AP_l``. Every result of detections that carry masks has a ``segmentation`` (COCO RLE),
whichever metric is computed, so ``det test --out`` keeps them.

Metric keys (MMDetection's ``bbox_`` names), in ``COCOeval.stats`` order: ``bbox_mAP``,
``bbox_mAP_50``, ``bbox_mAP_75``, ``bbox_mAP_s``, ``bbox_mAP_m``, ``bbox_mAP_l``, ``bbox_AR@1``,
``bbox_AR@10``, ``bbox_AR@100``, ``bbox_AR_s@100``, ``bbox_AR_m@100``, ``bbox_AR_l@100``.
A value is ``-1.0`` where pycocotools has nothing to measure (no GT in that area range).
``per_class`` lists ``{"class", "AP", "AP50", "AP75", "AP_s", "AP_m", "AP_l"}`` in label order
(:class:`ClassAP`): the maxDets-100 precision averaged over recall thresholds and the IoU
thresholds (all ten; 0.50; 0.75) at area "all", or over all IoU thresholds at one area range, as
MMDetection's ``classwise``; a value is None where the class has no GT in that range.
:meth:`CocoEvaluator.score_results` also returns pycocotools' accumulated arrays
(:class:`CocoAccumulated`, columns in label order) for what is drawn from them.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detcli.errors import ConfigError, DataError, DetError, writing
from detcli.evaluation.segm import (
    check_gt_segmentations,
    gt_segmentations,
    segm_results,
)
from detcli.structures.detections import Detections

log = logging.getLogger(__name__)

IOU_TYPES = ("bbox", "segm")
_STATS = ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l",
          "AR@1", "AR@10", "AR@100", "AR_s@100", "AR_m@100", "AR_l@100")


def metric_keys(iou_type: str = "bbox") -> tuple[str, ...]:
    """The 12 metric keys of ``iou_type`` ("bbox" or "segm"), in ``COCOeval.stats`` order."""
    return tuple(f"{iou_type}_{stat}" for stat in _STATS)


METRIC_KEYS = metric_keys("bbox")


@dataclass
class CocoGroundTruth:
    """A dataset's GT as a pycocotools index, and how dataset indices and labels map into it."""

    coco: COCO
    img_ids: list[int]  # I: COCO image id of dataset image i
    cat_ids: list[int]  # K: COCO category id of label k
    class_names: list[str]  # K


@dataclass
class CocoAccumulated:
    """pycocotools' ``COCOeval.accumulate()`` arrays, with the class axis in label order.

    ``precision[t, r, k, a, m]`` is the interpolated precision of label k at IoU threshold t,
    recall threshold r, area range a and ``maxDets`` m (-1 where the class has no GT there);
    ``recall[t, k, a, m]`` the recall reached; ``scores`` the score at which ``precision`` is
    reached (-1 likewise).
    """

    precision: np.ndarray  # (T, R, K, A, M)
    recall: np.ndarray  # (T, K, A, M)
    scores: np.ndarray  # (T, R, K, A, M)
    iou_thrs: np.ndarray  # (T,) 0.50:0.05:0.95
    rec_thrs: np.ndarray  # (R,) 0.00:0.01:1.00
    area_names: tuple[str, ...]  # A
    max_dets: tuple[int, ...]  # M: 1, 10, 100

    def iou_index(self, iou: float) -> int:
        """Index t of IoU threshold ``iou`` (one of ``iou_thrs``)."""
        hits = np.flatnonzero(np.isclose(self.iou_thrs, iou))
        if hits.size == 0:
            raise DetError(f"IoU threshold {iou} is not one COCOeval accumulated; it has "
                           f"{[round(float(t), 2) for t in self.iou_thrs]}")
        return int(hits[0])


@dataclass(frozen=True)
class ClassAP:
    """One class's COCO AP: over IoU 0.50:0.95, at 0.50, at 0.75, and per area range (all at
    maxDets 100); None where the class has no GT in that range."""

    name: str
    ap: float | None
    ap50: float | None
    ap75: float | None
    ap_s: float | None
    ap_m: float | None
    ap_l: float | None

    def to_json(self, prefix: str = "") -> dict[str, Any]:
        """``{"class", "AP", "AP50", ...}``; ``prefix`` goes before every AP key ("segm_")."""
        values = {"AP": self.ap, "AP50": self.ap50, "AP75": self.ap75, "AP_s": self.ap_s,
                  "AP_m": self.ap_m, "AP_l": self.ap_l}
        return {"class": self.name, **{prefix + key: v for key, v in values.items()}}


@dataclass
class CocoScores:
    """One COCO evaluation: the metrics (module docstring) and the arrays they come from."""

    metrics: dict[str, Any]
    accumulated: CocoAccumulated
    per_class: list[ClassAP]  # K, label order


def _mean_above(values: np.ndarray) -> float | None:
    """Mean of the entries > -1 (pycocotools' 'nothing to measure'), None if there are none."""
    kept = values[values > -1]
    return float(kept.mean()) if kept.size else None


def per_class_ap(acc: CocoAccumulated, class_names: Sequence[str]) -> list[ClassAP]:
    """:class:`ClassAP` of every label from ``acc.precision`` (T, R, K, A, M), maxDets 100."""
    t50, t75 = acc.iou_index(0.5), acc.iou_index(0.75)
    p = acc.precision[..., -1]  # (T, R, K, A)
    return [ClassAP(name, _mean_above(p[:, :, k, 0]), _mean_above(p[t50, :, k, 0]),
                    _mean_above(p[t75, :, k, 0]), _mean_above(p[:, :, k, 1]),
                    _mean_above(p[:, :, k, 2]), _mean_above(p[:, :, k, 3]))
            for k, name in enumerate(class_names)]


def silent_coco(data: dict[str, Any]) -> COCO:
    """A pycocotools index over an in-memory COCO dict, without its prints."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """(n, 4) x1, y1, x2, y2 -> (n, 4) x, y, w, h."""
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)  # (n, 4)


def _image_ids(dataset: Any) -> list[int]:
    ids = [int(info["id"]) for info in dataset.img_infos]
    repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
    if repeated:
        raise DataError(f"{getattr(dataset, 'source', 'the dataset')}: image id(s) {repeated[:5]} "
                        "appear more than once; COCO evaluation needs one id per image")
    return ids


def dataset_result_ids(dataset: Any) -> tuple[list[int], list[int]]:
    """(I image ids, K category ids) that COCO results of ``dataset`` carry: a COCO dataset's
    own ids, else ``img_infos[i]["id"]`` and label + 1."""
    img_ids = _image_ids(dataset)
    if getattr(dataset, "coco", None) is not None and hasattr(dataset, "cat_ids"):
        return img_ids, [int(c) for c in dataset.cat_ids]
    return img_ids, [k + 1 for k in range(len(dataset.CLASSES))]


def _annotations(dataset: Any, i: int, image_id: int, num_classes: int,
                 with_masks: bool = False) -> list[dict[str, Any]]:
    """COCO annotations of dataset image ``i``: its GT boxes, then its ignore boxes as crowds;
    ``with_masks``: each with its ``segmentation`` (:func:`~detcli.evaluation.segm.gt_segmentations`)."""
    ann = dataset.get_ann_info(i)
    boxes = np.asarray(ann["bboxes"], dtype=np.float64).reshape(-1, 4)  # (G, 4)
    labels = np.asarray(ann["labels"], dtype=np.int64).reshape(-1)  # (G,)
    ignore = np.asarray(ann.get("bboxes_ignore", np.zeros((0, 4))), dtype=np.float64).reshape(-1, 4)
    if hasattr(dataset, "get_ignore_labels"):
        ignore_labels = np.asarray(dataset.get_ignore_labels(i), dtype=np.int64)  # (Ig,)
    else:  # a crowd region of every class
        ignore_labels = np.tile(np.arange(num_classes), len(ignore))  # (Ig*K,)
        ignore = np.repeat(ignore, num_classes, axis=0)  # (Ig*K, 4)
    all_boxes = np.concatenate([boxes, ignore])  # (G + Ig, 4)
    all_labels = np.concatenate([labels, ignore_labels])  # (G + Ig,)
    crowd = np.arange(len(all_boxes)) >= len(boxes)  # (G + Ig,)
    xywh = xyxy_to_xywh(all_boxes).tolist()
    anns = [
        {"image_id": image_id, "category_id": int(label) + 1, "bbox": box,
         "area": box[2] * box[3], "iscrowd": int(is_crowd)}
        for box, label, is_crowd in zip(xywh, all_labels.tolist(), crowd.tolist())
    ]
    if with_masks:
        for ann, segm in zip(anns, gt_segmentations(dataset, i, all_boxes[len(boxes):])):
            ann["segmentation"] = segm
    return anns


def ground_truth_from_dataset(dataset: Any, with_masks: bool = False) -> CocoGroundTruth:
    """The dataset's GT as COCO (see the module docstring for the two ways); ``with_masks``:
    every annotation has a ``segmentation`` (an error naming the dataset where it cannot)."""
    img_ids, cat_ids = dataset_result_ids(dataset)
    names = [str(c) for c in dataset.CLASSES]
    coco = getattr(dataset, "coco", None)
    if coco is not None and hasattr(dataset, "cat_ids"):
        if with_masks:
            check_gt_segmentations(coco, img_ids, str(getattr(dataset, "source", "the dataset")))
        return CocoGroundTruth(coco, img_ids, cat_ids, names)
    images, annotations = [], []
    for i, (info, image_id) in enumerate(zip(dataset.img_infos, img_ids)):
        images.append({"id": image_id, "file_name": info.get("file_name", str(image_id)),
                       "height": int(info.get("height", 0)), "width": int(info.get("width", 0))})
        annotations += _annotations(dataset, i, image_id, len(names), with_masks)
    for ann_id, ann in enumerate(annotations, start=1):
        ann["id"] = ann_id
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(names)]
    data = {"images": images, "annotations": annotations, "categories": categories}
    return CocoGroundTruth(silent_coco(data), img_ids, cat_ids, names)


def detections_to_coco(detections: Sequence[Detections], img_ids: Sequence[int],
                       cat_ids: Sequence[int]) -> list[dict[str, Any]]:
    """COCO results of every image's detections, image by image, each in score order."""
    if len(detections) != len(img_ids):
        raise DetError(f"got detections for {len(detections)} images but the dataset has "
                       f"{len(img_ids)}; evaluation needs one entry per image, empty or not")
    cat_table = torch.tensor(list(cat_ids), dtype=torch.long)  # (K,)
    results: list[dict[str, Any]] = []
    for dets, image_id in zip(detections, img_ids):
        if len(dets) == 0:
            continue
        dets = dets.to("cpu")
        boxes = xyxy_to_xywh(dets.boxes.double().numpy()).tolist()  # (D, 4)
        categories = cat_table[dets.labels].tolist()  # (D,)
        scores = dets.scores.float().tolist()  # (D,)
        image = [{"image_id": int(image_id), "category_id": c, "bbox": b, "score": s}
                 for b, c, s in zip(boxes, categories, scores)]
        for result, rle in zip(image, dets.encoded_masks() or ()):
            result["segmentation"] = rle.to_coco()
        results += image
    return results


def write_results(path: str | Path, results: list[dict[str, Any]]) -> Path:
    """Write COCO results (``detections_to_coco``) as a JSON list."""
    path = Path(path)
    with writing(path, "the detection results"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results), encoding="utf-8")
    return path


def load_results(gt: COCO, results: list[dict[str, Any]]) -> COCO:
    """pycocotools' ``loadRes`` on a copy of ``results`` (it edits them); no results -> an empty
    index (``loadRes`` fails on an empty list)."""
    if not results:
        data = {"images": list(gt.dataset["images"]), "annotations": [],
                "categories": list(gt.dataset.get("categories", []))}
        return silent_coco(data)
    with contextlib.redirect_stdout(io.StringIO()):
        return gt.loadRes([dict(r) for r in results])


BACKENDS = ("pycocotools", "faster-coco-eval")


def coco_eval_maker(backend: str, iou_type: str = "bbox") -> Callable[[COCO, COCO], COCOeval]:
    """``(gt, results) -> COCOeval`` (``iou_type`` "bbox" or "segm") of ``backend``:
    pycocotools', or faster-coco-eval's drop-in (optional: ``pip install 'detcli[fast-eval]'``;
    a ConfigError here when missing)."""
    if iou_type not in IOU_TYPES:
        raise ConfigError(f"COCO iou_type {iou_type!r}: expected one of {list(IOU_TYPES)}")
    if backend == "pycocotools":
        return lambda gt, dt: COCOeval(gt, dt, iou_type)
    if backend != "faster-coco-eval":
        raise ConfigError(f"evaluation.backend = {backend!r}: expected one of {list(BACKENDS)}")
    try:
        from faster_coco_eval import COCOeval_faster  # optional dependency (detcli[fast-eval])
    except ImportError as exc:
        raise ConfigError("evaluation.backend = 'faster-coco-eval' needs the faster-coco-eval "
                          f"package, which cannot be imported ({exc})",
                          hint="pip install 'detcli[fast-eval]', or set evaluation.backend = "
                               "'pycocotools'") from None
    return lambda gt, dt: COCOeval_faster(gt, dt, iou_type, print_function=log.debug)


class CocoEvaluator:
    """COCO evaluation of detections on one dataset's images and classes, by the COCOeval of
    ``backend`` (:data:`BACKENDS`): of their boxes (``iou_type = "bbox"``) or their masks
    ("segm": the GT needs masks, the detections too)."""

    def __init__(self, dataset: Any, *, backend: str = "pycocotools",
                 iou_type: str = "bbox") -> None:
        self.iou_type = iou_type
        self.make_coco_eval = coco_eval_maker(backend, iou_type)
        self.gt = ground_truth_from_dataset(dataset, with_masks=iou_type == "segm")
        self.source = str(getattr(dataset, "source", type(dataset).__name__))
        if not self.gt.coco.dataset.get("annotations"):
            log.warning("%s has no GT annotations: every COCO metric will be -1", self.source)

    @property
    def class_names(self) -> list[str]:
        return self.gt.class_names

    def results(self, detections: Sequence[Detections]) -> list[dict[str, Any]]:
        """COCO results of ``detections`` (one per dataset image, in dataset order)."""
        return detections_to_coco(detections, self.gt.img_ids, self.gt.cat_ids)

    def evaluate(self, detections: Sequence[Detections]) -> dict[str, Any]:
        """The metrics (module docstring) of one :class:`Detections` per dataset image."""
        return self.evaluate_results(self.results(detections))

    def evaluate_results(self, results: list[dict[str, Any]]) -> dict[str, Any]:
        """The metrics of COCO results whose ids are this dataset's."""
        return self.score_results(results).metrics

    def score_results(self, results: list[dict[str, Any]]) -> CocoScores:
        """The metrics of COCO results whose ids are this dataset's, with pycocotools'
        accumulated arrays and the per-class rows."""
        if self.iou_type == "segm":  # masks, scored by their own area (MMDetection's)
            results = segm_results(results)
        coco_eval = self.make_coco_eval(self.gt.coco, load_results(self.gt.coco, results))
        coco_eval.params.imgIds = list(self.gt.img_ids)
        coco_eval.params.catIds = list(self.gt.cat_ids)
        summary = io.StringIO()
        with contextlib.redirect_stdout(summary):
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        log.debug("COCO %s evaluation of %d results on %s:\n%s", self.iou_type, len(results),
                  self.source, summary.getvalue())
        accumulated = self.accumulated(coco_eval)
        rows = per_class_ap(accumulated, self.gt.class_names)
        metrics: dict[str, Any] = {key: float(v) for key, v in
                                   zip(metric_keys(self.iou_type), coco_eval.stats)}
        prefix = "" if self.iou_type == "bbox" else f"{self.iou_type}_"
        metrics["per_class"] = [row.to_json(prefix) for row in rows]
        return CocoScores(metrics, accumulated, rows)

    def accumulated(self, coco_eval: COCOeval) -> CocoAccumulated:
        """``coco_eval.eval``'s arrays with the class axis reordered from COCOeval's sorted
        category ids to label order."""
        column = {cat_id: k for k, cat_id in enumerate(coco_eval.params.catIds)}  # sorted ids
        order = [column[cat_id] for cat_id in self.gt.cat_ids]  # (K,)
        ev, params = coco_eval.eval, coco_eval.params
        return CocoAccumulated(
            precision=ev["precision"][:, :, order], recall=ev["recall"][:, order],
            scores=ev["scores"][:, :, order], iou_thrs=np.asarray(params.iouThrs),
            rec_thrs=np.asarray(params.recThrs), area_names=tuple(params.areaRngLbl),
            max_dets=tuple(int(m) for m in params.maxDets))
