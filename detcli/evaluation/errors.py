"""Where the AP goes: a TIDE error breakdown of COCO results.

I images, K classes, N results, F false positives and G GT boxes of one image.

In the manner of TIDE (Bolya et al., ECCV 2020, "TIDE: A General Toolbox for Identifying
Object Detection Errors"), every false positive at IoU ``fg_iou`` (t_f = 0.5) gets one error
type, every GT box nobody found may be a miss, and each type's weight is **dAP**: how much the
COCO AP at IoU 0.5 (``bbox_mAP_50``) would rise if the errors of that type alone were fixed by
an oracle. Definitions (``IoU_same``: the false positive's highest IoU with a GT box of its own
class; ``IoU_other``: with a GT box of another class; t_b = ``bg_iou`` = 0.1), tested in this
order (they are reported in TIDE's: Cls, Loc, Both, Dupe, Bkg, Miss):

=============== ============================================ ======================================
type            a false positive with                        the oracle's fix
=============== ============================================ ======================================
localisation    t_b <= IoU_same <= t_f                       it becomes a TP of that GT box
classification  IoU_other >= t_f                             it becomes a TP of that GT box
duplicate       IoU >= t_f with a GT box of its class that   it is removed
                a higher-scoring TP matched
background      IoU <= t_b with every GT box                 it is removed
both            anything else: IoU_same < t_b and            it is removed
                t_b < IoU_other < t_f (wrong class, loose)
missed          (a GT box) no TP's, and no fixable           the GT box is removed (recall rises)
                localisation / classification error's
=============== ============================================ ======================================

A classification or localisation fix turns the detection into a TP only when its GT box
(the arg-max of ``IoU_other`` / ``IoU_same``) is matched by no TP, and only for the
highest-scoring such error on that GT box (classification and localisation errors compete):
the other errors on it are removed, as TIDE's ``BestGTMatch`` does. The fixed detection takes
the GT box's class and box, so COCOeval matches it to that GT box; at one IoU threshold a TP
counts the same however tight it is.

The AP is COCO's throughout: pycocotools' ``COCOeval`` with ``iouThrs = [0.5]``, area "all",
``maxDets = [100]`` (per image and class, as COCOeval counts), on the original results once and
on each type's fixed results once (7 runs; a fixed run evaluates again only the (image,
category) pairs its fix changed and takes the base run's entries for the rest, which are the
same, then pycocotools accumulates). Which detections are TPs, FPs or ignored (on a crowd
region, COCO ``iscrowd``: neither, and no error) is COCOeval's own matching (``evalImgs``).
``dAP = AP(fixed) - AP(original)``, overall (mean over the classes with GT, as
``bbox_mAP_50``) and per class. A class whose GT boxes are all removed by the missed fix keeps
its AP (0: it had no TP). Differences from TIDE's own code: its AP is its own re-implementation
of COCO's 101-point AP (the same numbers: ``tests/fixtures/tide_errors.json`` holds tidecv
1.0.1's breakdown of random scenes, which this module reproduces), it counts ``max_dets`` per
image (COCO: per image and class), it ignores a detection on a crowd region at IoU > 0.5 (COCO:
>= 0.5) yet still gives it an error type and counts it as a FP in the other types' fixed runs
(here it has none), it scores a class without GT but with detections AP 0 (COCO leaves it out),
and it clamps a negative dAP to 0 (none of these fixes can lower COCO's interpolated AP).
"""

from __future__ import annotations

import contextlib
import copy
import io
from dataclasses import dataclass
from enum import Enum
from typing import Any, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detcli.errors import ConfigError
from detcli.evaluation.coco import CocoGroundTruth, load_results, silent_coco
from detcli.evaluation.confusion import (
    ResultArrays,
    coco_iou,
    image_ground_truth,
    image_spans,
    result_arrays,
    score_order,
)

FG_IOU = 0.5  # TIDE's t_f: a detection is a TP at IoU >= t_f
BG_IOU = 0.1  # TIDE's t_b: at IoU <= t_b with every GT box a FP is background


class ErrorType(str, Enum):
    """The six TIDE error types, in TIDE's order."""

    CLS = "classification"
    LOC = "localisation"
    BOTH = "both"
    DUPE = "duplicate"
    BKG = "background"
    MISSED = "missed"

    @property
    def short(self) -> str:
        """TIDE's short name (Cls, Loc, Both, Dupe, Bkg, Miss)."""
        return _SHORT[self]


_SHORT = {ErrorType.CLS: "Cls", ErrorType.LOC: "Loc", ErrorType.BOTH: "Both",
          ErrorType.DUPE: "Dupe", ErrorType.BKG: "Bkg", ErrorType.MISSED: "Miss"}
ERROR_TYPES = tuple(ErrorType)
FP_TYPES = ERROR_TYPES[:5]  # the types of a false positive; MISSED is a GT's


@dataclass(frozen=True)
class ErrorAttribution:
    """Every error found, and what each type's oracle changes.

    ``fp_index[f]`` is the results index of false positive f, ``fp_type[f]`` its type (index
    into :data:`FP_TYPES`), ``fp_label[f]`` its class and ``fp_image[f]`` its image;
    ``fixed_gt[f]`` the COCO annotation id it turns into a TP of under its type's fix (-1: it
    is removed). ``missed_ann_ids`` / ``missed_labels`` / ``missed_images`` are the missed GT.
    """

    fp_index: np.ndarray  # (F,) int64, results order
    fp_type: np.ndarray  # (F,) int64
    fp_label: np.ndarray  # (F,) int64
    fp_image: np.ndarray  # (F,) int64 COCO image id
    fixed_gt: np.ndarray  # (F,) int64 annotation id or -1
    missed_ann_ids: np.ndarray  # (M,) int64
    missed_labels: np.ndarray  # (M,) int64
    missed_images: np.ndarray  # (M,) int64

    def count(self, error: ErrorType) -> int:
        if error is ErrorType.MISSED:
            return len(self.missed_ann_ids)
        return int((self.fp_type == FP_TYPES.index(error)).sum())

    def count_per_class(self, error: ErrorType, num_classes: int) -> np.ndarray:
        """(K,) errors of ``error`` per class: the detection's class, the GT's for a miss."""
        labels = (self.missed_labels if error is ErrorType.MISSED
                  else self.fp_label[self.fp_type == FP_TYPES.index(error)])
        return np.bincount(labels, minlength=num_classes)

    def errors_per_image(self, image_ids: Sequence[int]) -> np.ndarray:
        """(I,) errors of every type on each of ``image_ids``."""
        order = {int(i): n for n, i in enumerate(image_ids)}
        per_image = np.zeros(len(order), dtype=np.int64)
        for image in (*self.fp_image.tolist(), *self.missed_images.tolist()):
            per_image[order[image]] += 1
        return per_image


@dataclass(frozen=True)
class ErrorImpact:
    """One error type: how many there are and what fixing them all adds to AP50."""

    type: ErrorType
    count: int
    delta_ap: float  # mAP50(fixed) - mAP50, over the classes with GT
    count_per_class: np.ndarray  # (K,) int64
    delta_ap_per_class: np.ndarray  # (K,) float, NaN for a class without GT

    def to_json(self, class_names: Sequence[str]) -> dict[str, Any]:
        return {"type": self.type.value, "short": self.type.short, "count": self.count,
                "dAP50": self.delta_ap,
                "per_class": [{"class": name, "count": int(n), "dAP50": _or_none(d)}
                              for name, n, d in zip(class_names, self.count_per_class,
                                                    self.delta_ap_per_class)]}


@dataclass(frozen=True)
class ErrorBreakdown:
    """A TIDE breakdown (module docstring): AP50 and each error type's dAP50."""

    class_names: list[str]  # K
    ap50: float  # COCO mAP at IoU 0.5 (maxDets 100), as bbox_mAP_50; 0 when no class has GT
    ap50_per_class: np.ndarray  # (K,) NaN for a class without GT
    impacts: list[ErrorImpact]  # one per ErrorType, in ERROR_TYPES order
    fg_iou: float
    bg_iou: float
    max_dets: int

    def impact(self, error: ErrorType) -> ErrorImpact:
        return self.impacts[ERROR_TYPES.index(error)]

    def to_json(self) -> dict[str, Any]:
        return {"fg_iou": self.fg_iou, "bg_iou": self.bg_iou, "max_dets": self.max_dets,
                "AP50": self.ap50,
                "AP50_per_class": [{"class": n, "AP50": _or_none(a)}
                                   for n, a in zip(self.class_names, self.ap50_per_class)],
                "errors": [i.to_json(self.class_names) for i in self.impacts]}


def _or_none(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


@dataclass(frozen=True)
class _CocoMatches:
    """COCOeval's own matching at one IoU threshold: which results are TPs and FPs."""

    fp_index: np.ndarray  # (F,) results indices of the false positives
    used_ann_ids: set[int]  # GT annotations a TP matched


def _coco_eval(gt_coco: COCO, results: list[dict[str, Any]], gt: CocoGroundTruth,
               iou: float, max_dets: int) -> COCOeval:
    """COCOeval 'bbox' at one IoU threshold, area "all", ``max_dets``; evaluated, accumulated."""
    coco_eval = COCOeval(gt_coco, load_results(gt_coco, results), "bbox")
    params = coco_eval.params
    params.imgIds, params.catIds = list(gt.img_ids), list(gt.cat_ids)
    params.iouThrs = np.array([iou])
    params.areaRng, params.areaRngLbl = [[0.0, 1e5 ** 2]], ["all"]
    params.maxDets = [max_dets]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval.evaluate()
        coco_eval.accumulate()
    return coco_eval


def _per_class_ap(coco_eval: COCOeval, gt: CocoGroundTruth) -> np.ndarray:
    """(K,) AP of each label, NaN where the class has no GT (precision -1)."""
    precision = coco_eval.eval["precision"][0, :, :, 0, 0]  # (R, K) in sorted-category order
    column = {int(c): k for k, c in enumerate(coco_eval.params.catIds)}
    ap = np.full(len(gt.cat_ids), np.nan)
    for k, cat_id in enumerate(gt.cat_ids):
        values = precision[:, column[int(cat_id)]]  # (R,)
        if (values > -1).any():
            ap[k] = float(values[values > -1].mean())
    return ap


def _matches(coco_eval: COCOeval) -> _CocoMatches:
    """TPs' GT and the FPs' result indices from ``evalImgs`` (a result's id is index + 1)."""
    fps, used = [], set()
    for entry in coco_eval.evalImgs:
        if entry is None or not entry["dtIds"]:
            continue
        ids = np.asarray(entry["dtIds"], dtype=np.int64)  # (D,)
        matched = np.asarray(entry["dtMatches"][0], dtype=np.int64)  # (D,) GT id or 0
        ignored = np.asarray(entry["dtIgnore"][0], dtype=bool)  # (D,)
        fps.append(ids[(matched == 0) & ~ignored] - 1)
        used.update(matched[(matched > 0) & ~ignored].tolist())
    fp_index = np.sort(np.concatenate(fps)) if fps else np.zeros(0, dtype=np.int64)
    return _CocoMatches(fp_index, used)


def _image_errors(fps: ResultArrays, gt: CocoGroundTruth, image_id: int, used: set[int],
                  fg_iou: float, bg_iou: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's false positives (score order) -> (type (F,), fix target (F,) annotation id or
    -1, the ids of this image's GT boxes that some fix targets)."""
    image_gt = image_ground_truth(gt, image_id)
    iou = coco_iou(fps.boxes, image_gt.boxes)  # (F, G)
    same = fps.labels[:, None] == image_gt.labels[None, :]  # (F, G)
    gt_used = np.isin(image_gt.ann_ids, list(used))  # (G,)
    iou_same = np.where(same, iou, 0.0)  # (F, G)
    iou_other = np.where(same, 0.0, iou)  # (F, G)
    max_same = iou_same.max(axis=1, initial=0.0)  # (F,)
    max_other = iou_other.max(axis=1, initial=0.0)  # (F,)
    max_used_same = np.where(gt_used[None, :], iou_same, 0.0).max(axis=1, initial=0.0)  # (F,)
    loc = (max_same >= bg_iou) & (max_same <= fg_iou)
    cls = ~loc & (max_other >= fg_iou)
    dupe = ~loc & ~cls & (max_used_same >= fg_iou)
    bkg = ~loc & ~cls & ~dupe & (np.maximum(max_same, max_other) <= bg_iou)
    kinds = [FP_TYPES.index(t) for t in (ErrorType.LOC, ErrorType.CLS, ErrorType.DUPE,
                                          ErrorType.BKG)]
    fp_type = np.select([loc, cls, dupe, bkg], kinds, FP_TYPES.index(ErrorType.BOTH))  # (F,)
    if not len(image_gt.ann_ids):
        return fp_type, np.full(len(fp_type), -1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    slot = np.where(loc, iou_same.argmax(axis=1), iou_other.argmax(axis=1))  # (F,) GT slot
    fixable = (loc | cls) & ~gt_used[slot]  # (F,)
    # the highest-scoring fixable error on a GT box is fixed; the rest on it are removed
    slots, first = np.unique(np.where(fixable, slot, -1), return_index=True)
    winners = first[slots >= 0]
    target = np.full(len(fp_type), -1, dtype=np.int64)
    target[winners] = image_gt.ann_ids[slot[winners]]
    return fp_type, target, image_gt.ann_ids[slot[fixable]]


def attribute_errors(gt: CocoGroundTruth, results: Sequence[dict[str, Any]], *,
                     fg_iou: float = FG_IOU, bg_iou: float = BG_IOU,
                     max_dets: int = 100) -> ErrorAttribution:
    """The error type of every false positive and the missed GT boxes (module docstring)."""
    _check_thresholds(fg_iou, bg_iou)
    results = list(results)
    return _attribute(gt, results, _coco_eval(gt.coco, results, gt, fg_iou, max_dets),
                      fg_iou, bg_iou)


def _attribute(gt: CocoGroundTruth, results: list[dict[str, Any]], base: COCOeval,
               fg_iou: float, bg_iou: float) -> ErrorAttribution:
    """:func:`attribute_errors` given the COCOeval run on the original results."""
    arrays = result_arrays(gt, results)
    matches = _matches(base)
    by_image = matches.fp_index[np.argsort(arrays.image_ids[matches.fp_index], kind="mergesort")]
    spans = image_spans(arrays.image_ids[by_image])
    none = np.zeros(0, dtype=np.int64)
    fp_rows, fp_types, targets = [none], [none], [none]  # per image, concatenated below
    fixable: set[int] = set()  # GT annotations some fix turns into a TP: not missed
    for image_id, span in spans.items():
        rows = by_image[span]
        rows = rows[score_order(arrays.scores[rows])]  # (F,) score order, ties by results order
        fp_type, target, usable = _image_errors(arrays.of_image(rows), gt, image_id,
                                                matches.used_ann_ids, fg_iou, bg_iou)
        fp_rows.append(rows)
        fp_types.append(fp_type)
        targets.append(target)
        fixable.update(usable.tolist())
    missed_ids, missed_labels, missed_images = [], [], []
    for image_id in gt.img_ids:
        image_gt = image_ground_truth(gt, image_id)
        for ann_id, label in zip(image_gt.ann_ids.tolist(), image_gt.labels.tolist()):
            if ann_id not in matches.used_ann_ids and ann_id not in fixable:
                missed_ids.append(ann_id)
                missed_labels.append(label)
                missed_images.append(image_id)
    rows = np.concatenate(fp_rows).astype(np.int64)  # (F,) all images
    return ErrorAttribution(rows, np.concatenate(fp_types).astype(np.int64), arrays.labels[rows],
                            arrays.image_ids[rows], np.concatenate(targets).astype(np.int64),
                            np.array(missed_ids, dtype=np.int64),
                            np.array(missed_labels, dtype=np.int64),
                            np.array(missed_images, dtype=np.int64))


def _check_thresholds(fg_iou: float, bg_iou: float) -> None:
    if not 0.0 < bg_iou < fg_iou <= 1.0:
        raise ConfigError(f"the error breakdown needs 0 < background IoU < foreground IoU <= 1, "
                          f"got background {bg_iou}, foreground {fg_iou} (TIDE: 0.1 and 0.5)")


def fixed_results(results: Sequence[dict[str, Any]], attribution: ErrorAttribution,
                  error: ErrorType, gt_coco: COCO) -> list[dict[str, Any]]:
    """``results`` after the oracle of false-positive type ``error``: its FPs removed, or (a
    localisation / classification fix) given their GT box's class and box."""
    mine = attribution.fp_type == FP_TYPES.index(error)
    changed = {int(i): int(t) for i, t in zip(attribution.fp_index[mine],
                                              attribution.fixed_gt[mine])}
    out = []
    for i, r in enumerate(results):
        target = changed.get(i)
        if target is None:
            out.append(r)
        elif target >= 0:
            ann = gt_coco.anns[target]
            out.append({**r, "category_id": ann["category_id"], "bbox": list(ann["bbox"])})
    return out


def _touched(results: Sequence[dict[str, Any]], attribution: ErrorAttribution,
             error: ErrorType, gt_coco: COCO) -> set[tuple[int, int]]:
    """The (image id, category id) pairs the oracle of ``error`` changes."""
    if error is ErrorType.MISSED:
        return {(int(gt_coco.anns[a]["image_id"]), int(gt_coco.anns[a]["category_id"]))
                for a in attribution.missed_ann_ids.tolist()}
    mine = attribution.fp_type == FP_TYPES.index(error)
    pairs = {(int(results[i]["image_id"]), int(results[i]["category_id"]))
             for i in attribution.fp_index[mine].tolist()}
    pairs |= {(int(gt_coco.anns[t]["image_id"]), int(gt_coco.anns[t]["category_id"]))
              for t in attribution.fixed_gt[mine].tolist() if t >= 0}
    return pairs


def without_annotations(gt_coco: COCO, ann_ids: np.ndarray) -> COCO:
    """A copy of the GT index without annotations ``ann_ids`` (the missed-GT oracle)."""
    drop = set(ann_ids.tolist())
    data = dict(gt_coco.dataset)
    data["annotations"] = [a for a in gt_coco.dataset["annotations"] if int(a["id"]) not in drop]
    return silent_coco(data)


def _reevaluated(base: COCOeval, gt_coco: COCO, results: list[dict[str, Any]],
                 touched: set[tuple[int, int]]) -> COCOeval:
    """COCOeval of ``results`` on ``gt_coco`` with ``base``'s parameters, accumulated.

    pycocotools evaluates each (image, category) on its own (``evaluateImg``) and
    ``accumulate`` reads only those entries, so an entry whose GT and detections the fix left
    alone is the base run's: only the ``touched`` pairs are evaluated again (pycocotools'
    ``computeIoU`` and ``evaluateImg``), which makes a fixed run cost a fraction of a full one.
    """
    coco_eval = COCOeval(gt_coco, load_results(gt_coco, results), "bbox")
    coco_eval.params = params = copy.deepcopy(base._paramsEval)  # imgIds / catIds sorted
    image_slot = {int(i): n for n, i in enumerate(params.imgIds)}
    cat_slot = {int(c): n for n, c in enumerate(params.catIds)}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval._prepare()
        coco_eval.ious = {}
        coco_eval.evalImgs = list(base.evalImgs)  # category-major, then image (one area)
        for image_id, cat_id in touched:
            coco_eval.ious[image_id, cat_id] = coco_eval.computeIoU(image_id, cat_id)
            slot = cat_slot[cat_id] * len(params.imgIds) + image_slot[image_id]
            coco_eval.evalImgs[slot] = coco_eval.evaluateImg(image_id, cat_id,
                                                             params.areaRng[0],
                                                             params.maxDets[-1])
        coco_eval._paramsEval = copy.deepcopy(params)
        coco_eval.accumulate()
    return coco_eval


def _mean_over(ap: np.ndarray, classes: np.ndarray) -> float:
    return float(ap[classes].mean()) if classes.any() else 0.0


def error_breakdown(gt: CocoGroundTruth, results: Sequence[dict[str, Any]], *,
                    fg_iou: float = FG_IOU, bg_iou: float = BG_IOU,
                    max_dets: int = 100) -> ErrorBreakdown:
    """AP50 and each TIDE error type's dAP50 for COCO ``results`` on ``gt`` (module docstring)."""
    _check_thresholds(fg_iou, bg_iou)
    results = list(results)
    K = len(gt.class_names)
    base = _coco_eval(gt.coco, results, gt, fg_iou, max_dets)
    ap = _per_class_ap(base, gt)  # (K,)
    has_gt = ~np.isnan(ap)  # (K,)
    attribution = _attribute(gt, results, base, fg_iou, bg_iou)
    impacts = []
    for error in ERROR_TYPES:
        touched = _touched(results, attribution, error, gt.coco)
        if error is ErrorType.MISSED:
            fixed = _reevaluated(base, without_annotations(gt.coco, attribution.missed_ann_ids),
                                 results, touched)
        else:
            fixed = _reevaluated(base, gt.coco, fixed_results(results, attribution, error,
                                                              gt.coco), touched)
        fixed_ap = _per_class_ap(fixed, gt)  # (K,)
        fixed_ap = np.where(has_gt & np.isnan(fixed_ap), ap, fixed_ap)  # all GT removed: kept
        delta = np.where(has_gt, fixed_ap - ap, np.nan)  # (K,)
        impacts.append(ErrorImpact(error, attribution.count(error),
                                   _mean_over(fixed_ap, has_gt) - _mean_over(ap, has_gt),
                                   attribution.count_per_class(error, K), delta))
    return ErrorBreakdown(list(gt.class_names), _mean_over(ap, has_gt), ap, impacts,
                          float(fg_iou), float(bg_iou), int(max_dets))
