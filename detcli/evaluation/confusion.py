"""A detection confusion matrix: which class each GT box was found as, and what each
detection hit.

I images, K classes, N results (COCO results of the whole dataset), D kept detections and G GT
boxes of one image, C crowd (ignore) regions of one image.

The matrix is (K+1, K+1): row = GT class, column = predicted class, with a last "background"
row (detections that match no GT: false positives) and a last "background" column (GT boxes no
detection matched: misses). It is counted one image at a time, in the manner of MMDetection's
``tools/analysis_tools/confusion_matrix.py``, with one-to-one matches:

1. Detections scoring at least ``score_thr`` are kept and taken in score order (highest first,
   ties in results order). IoU is COCO's (``pycocotools.mask.iou``: ``w = x2 - x1``, no +1).
2. Same class first: each detection takes the not yet matched GT box of its own class with the
   highest IoU, if that IoU is >= ``iou_thr`` (COCO's matching) -> a diagonal cell.
3. Then any class: each detection still unmatched takes the not yet matched GT box of any class
   with the highest IoU >= ``iou_thr`` -> cell (GT class, predicted class), off the diagonal
   when the classes differ. Step 2 comes first so that a wrong-class detection scoring higher
   cannot take a GT box that a right-class detection also found.
4. A detection still unmatched whose crowd IoU (intersection over the detection's own area, as
   COCO measures crowds) with a crowd / ignore region of any class is >= ``iou_thr`` is left
   out: neither a true nor a false positive (COCO ``iscrowd``). Crowd regions are no GT rows.
5. Every other detection is a false positive: cell (background, predicted class). That includes
   a duplicate: a second detection of a GT box already matched.
6. Every GT box left unmatched is a miss: cell (GT class, background).

So every GT box is counted once in its class's row (row sums = GT boxes per class) and every
kept detection outside crowd regions once in its class's column. MMDetection's tool differs:
it counts a detection once per GT box it overlaps (IoU >= the threshold, any class), counts a
duplicate on the diagonal again, and also counts a GT box that only a wrong-class detection
found as a miss, so its row sums are not the GT counts; it ignores crowd flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from detcli.errors import ConfigError, DataError
from detcli.evaluation.coco import CocoGroundTruth


@dataclass(frozen=True)
class ResultArrays:
    """COCO results as arrays, in results order."""

    image_ids: np.ndarray  # (N,) COCO image id
    labels: np.ndarray  # (N,) label k (index into CocoGroundTruth.cat_ids)
    boxes: np.ndarray  # (N, 4) x, y, w, h
    scores: np.ndarray  # (N,)

    def of_image(self, rows: np.ndarray) -> "ResultArrays":
        """The results at indices ``rows``."""
        return ResultArrays(self.image_ids[rows], self.labels[rows], self.boxes[rows],
                            self.scores[rows])


@dataclass(frozen=True)
class ImageGroundTruth:
    """One image's COCO annotations split into GT boxes and crowd regions."""

    ann_ids: np.ndarray  # (G,) COCO annotation ids of the GT boxes
    boxes: np.ndarray  # (G, 4) x, y, w, h
    labels: np.ndarray  # (G,) label k
    crowd_boxes: np.ndarray  # (C, 4) x, y, w, h of the crowd / ignore regions


def result_arrays(gt: CocoGroundTruth, results: Sequence[dict[str, Any]]) -> ResultArrays:
    """``results`` (``{"image_id", "category_id", "bbox", "score"}``) as arrays; a result for an
    image or category the GT does not have is a :class:`DataError` naming it."""
    label_of = {int(c): k for k, c in enumerate(gt.cat_ids)}
    images = set(int(i) for i in gt.img_ids)
    image_ids = np.array([int(r["image_id"]) for r in results], dtype=np.int64)  # (N,)
    categories = [int(r["category_id"]) for r in results]
    unknown_cats = sorted(set(categories) - set(label_of))
    if unknown_cats:
        raise DataError(f"results have category id(s) {unknown_cats[:5]} the dataset does not "
                        f"have; its category ids are {sorted(label_of)[:20]}")
    unknown_images = sorted(set(image_ids.tolist()) - images)
    if unknown_images:
        raise DataError(f"results have image id(s) {unknown_images[:5]} that are not images of "
                        f"the dataset ({len(images)} images)")
    labels = np.array([label_of[c] for c in categories], dtype=np.int64)  # (N,)
    boxes = np.array([r["bbox"] for r in results], dtype=np.float64).reshape(-1, 4)  # (N, 4)
    scores = np.array([float(r["score"]) for r in results], dtype=np.float64)  # (N,)
    return ResultArrays(image_ids, labels, boxes, scores)


def image_ground_truth(gt: CocoGroundTruth, image_id: int) -> ImageGroundTruth:
    """The annotations of ``image_id`` (``iscrowd`` ones are crowd regions)."""
    label_of = {int(c): k for k, c in enumerate(gt.cat_ids)}
    anns = [a for a in gt.coco.imgToAnns.get(image_id, []) if int(a["category_id"]) in label_of]
    crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)  # (G + C,)
    boxes = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)  # (G + C, 4)
    labels = np.array([label_of[int(a["category_id"])] for a in anns], dtype=np.int64)
    ann_ids = np.array([int(a["id"]) for a in anns], dtype=np.int64)
    return ImageGroundTruth(ann_ids[~crowd], boxes[~crowd], labels[~crowd], boxes[crowd])


def coco_iou(dt_boxes: np.ndarray, gt_boxes: np.ndarray, crowd: bool = False) -> np.ndarray:
    """COCO IoU of (D, 4) and (G, 4) x, y, w, h boxes -> (D, G); ``crowd``: intersection over
    the detection's area instead (COCO's IoU with an ``iscrowd`` region)."""
    if len(dt_boxes) == 0 or len(gt_boxes) == 0:
        return np.zeros((len(dt_boxes), len(gt_boxes)))
    flags = [int(crowd)] * len(gt_boxes)
    return np.asarray(mask_utils.iou(dt_boxes.tolist(), gt_boxes.tolist(), flags)).reshape(
        len(dt_boxes), len(gt_boxes))


def image_spans(sorted_image_ids: np.ndarray) -> dict[int, slice]:
    """Image id -> the slice of ``sorted_image_ids`` (n,), grouped by image, that holds it."""
    ids, starts, lengths = np.unique(sorted_image_ids, return_index=True, return_counts=True)
    return {int(i): slice(int(s), int(s + n)) for i, s, n in zip(ids, starts, lengths)}


def score_order(scores: np.ndarray) -> np.ndarray:
    """Indices of ``scores`` (n,) from highest to lowest, ties in their given order."""
    return np.argsort(-scores, kind="mergesort")


def greedy_match(iou: np.ndarray, allowed: np.ndarray, iou_thr: float,
                 det_free: np.ndarray, gt_free: np.ndarray) -> np.ndarray:
    """One-to-one matching in detection order (rows are in score order).

    ``iou`` (D, G), ``allowed`` (D, G) which pairs may match, ``det_free`` (D,) / ``gt_free``
    (G,) which are still unmatched (``gt_free`` is updated in place). Each free detection, in
    order, takes the free allowed GT with the highest IoU >= ``iou_thr``. Returns (D,) the GT
    index each detection took, -1 for none. Only detections with a candidate at all are
    visited; the order makes the rest sequential.
    """
    taken = np.full(len(iou), -1, dtype=np.int64)  # (D,)
    candidates = allowed & (iou >= iou_thr) & det_free[:, None]  # (D, G)
    for d in np.flatnonzero(candidates.any(axis=1)):
        open_ious = np.where(candidates[d] & gt_free, iou[d], -1.0)  # (G,)
        g = int(open_ious.argmax())
        if open_ious[g] >= iou_thr:
            taken[d] = g
            gt_free[g] = False
    return taken


@dataclass(frozen=True)
class ImageConfusion:
    """One image's matching: for each kept detection (score order) and GT box, where it went."""

    det_labels: np.ndarray  # (D,) predicted label of each kept detection, score order
    det_rows: np.ndarray  # (D,) its row: the matched GT's label, K = background, -1 = on a crowd
    gt_labels: np.ndarray  # (G,) label of each GT box
    gt_cols: np.ndarray  # (G,) its column: the matching detection's label, K = missed


def match_image(dets: ResultArrays, image_gt: ImageGroundTruth, num_classes: int,
                iou_thr: float) -> ImageConfusion:
    """The module docstring's steps 2-6 on one image's kept detections (in score order)."""
    K = num_classes
    iou = coco_iou(dets.boxes, image_gt.boxes)  # (D, G)
    same = dets.labels[:, None] == image_gt.labels[None, :]  # (D, G)
    gt_free = np.ones(len(image_gt.boxes), dtype=bool)  # (G,)
    taken = greedy_match(iou, same, iou_thr, np.ones(len(iou), dtype=bool), gt_free)  # (D,)
    any_class = greedy_match(iou, np.ones_like(same), iou_thr, taken < 0, gt_free)  # (D,)
    taken = np.where(taken >= 0, taken, any_class)  # (D,)
    matched = taken >= 0  # (D,)
    on_crowd = coco_iou(dets.boxes, image_gt.crowd_boxes, crowd=True).max(
        axis=1, initial=0.0) >= iou_thr  # (D,)
    rows = np.where(on_crowd, -1, K)  # (D,) unmatched: left out on a crowd, else background
    rows[matched] = image_gt.labels[taken[matched]]
    cols = np.full(len(image_gt.boxes), K, dtype=np.int64)  # (G,)
    cols[taken[matched]] = dets.labels[matched]
    return ImageConfusion(dets.labels, rows.astype(np.int64), image_gt.labels, cols)


@dataclass(frozen=True)
class ConfusionMatrix:
    """Counts of (GT class, predicted class) over a dataset, background last on both axes.

    ``counts[k, j]``: GT boxes of class k matched by a detection of class j (k, j < K);
    ``counts[K, j]``: false positives of class j; ``counts[k, K]``: missed GT boxes of class k.
    ``image_false_positives[i]`` / ``image_missed[i]``: per dataset image, the kept detections
    not on the diagonal (wrong class, duplicate or background) and the GT boxes not found as
    their class (wrong class or missed).
    """

    counts: np.ndarray  # (K+1, K+1) int64
    class_names: list[str]  # K
    iou_thr: float
    score_thr: float
    image_ids: np.ndarray  # (I,) COCO image ids, dataset order
    image_false_positives: np.ndarray  # (I,) int64
    image_missed: np.ndarray  # (I,) int64

    @property
    def labels(self) -> list[str]:
        """Axis labels: the K class names, then "background"."""
        return [*self.class_names, "background"]

    def normalised(self) -> np.ndarray:
        """(K+1, K+1) float: each row divided by its sum (a row without counts stays 0)."""
        sums = self.counts.sum(axis=1, keepdims=True)  # (K+1, 1)
        return np.divide(self.counts, sums, out=np.zeros(self.counts.shape), where=sums > 0)

    def to_json(self) -> dict[str, Any]:
        return {"iou_thr": self.iou_thr, "score_thr": self.score_thr, "classes": self.labels,
                "counts": self.counts.tolist(),
                "normalised": np.round(self.normalised(), 6).tolist()}


def confusion_matrix(gt: CocoGroundTruth, results: Sequence[dict[str, Any]], *,
                     iou_thr: float = 0.5, score_thr: float = 0.3) -> ConfusionMatrix:
    """The confusion matrix of COCO ``results`` on ``gt``'s images (module docstring)."""
    if not 0.0 < iou_thr <= 1.0:
        raise ConfigError(f"the confusion matrix's IoU threshold must be in (0, 1], got {iou_thr}")
    K = len(gt.class_names)
    arrays = result_arrays(gt, results)
    keep = np.flatnonzero(arrays.scores >= score_thr)  # kept results, results order
    by_image = keep[np.argsort(arrays.image_ids[keep], kind="mergesort")]  # grouped by image
    spans = image_spans(arrays.image_ids[by_image])
    counts = np.zeros((K + 1, K + 1), dtype=np.int64)
    fps = np.zeros(len(gt.img_ids), dtype=np.int64)
    missed = np.zeros(len(gt.img_ids), dtype=np.int64)
    for i, image_id in enumerate(gt.img_ids):
        rows = by_image[spans.get(image_id, slice(0, 0))]
        dets = arrays.of_image(rows[score_order(arrays.scores[rows])])
        m = match_image(dets, image_ground_truth(gt, image_id), K, iou_thr)
        counted = m.det_rows >= 0
        np.add.at(counts, (m.det_rows[counted], m.det_labels[counted]), 1)
        np.add.at(counts, (m.gt_labels[m.gt_cols == K], K), 1)
        fps[i] = int((counted & (m.det_rows != m.det_labels)).sum())
        missed[i] = int((m.gt_cols != m.gt_labels).sum())
    return ConfusionMatrix(counts, list(gt.class_names), float(iou_thr), float(score_thr),
                           np.asarray(gt.img_ids, dtype=np.int64), fps, missed)
