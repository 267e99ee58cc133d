"""The images with the most errors, by file name (``det test --plots``'s report).

I images, K classes. An image's *errors* are counted with pycocotools' own matching
(``COCOeval.evaluateImg``: per class, detections in score order, each taking the best still
unmatched GT box with IoU >= ``iou_thr``, crowd regions ignoring what falls on them; at most
100 detections per image and class, area "all"):

- **false positives**: detections scoring >= ``score_thr`` that match no GT box of their class
  and are not ignored (a duplicate of a found box and a wrong-class detection both count);
- **missed GT**: GT boxes (not crowd) that no detection scoring >= ``score_thr`` matches.

Because the matching is greedy in score order, the detections scoring >= ``score_thr`` are
matched exactly as if they were the only ones, so the counts are those of the detections a
user sees at that threshold (``det test --show-dir --show-score-thr``). The defaults are the
confusion matrix's: IoU 0.5, score 0.3. Images are ranked by errors (false positives + missed
GT), then by missed GT, then in dataset order; images without errors are not listed.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from pycocotools.cocoeval import COCOeval

from detcli.evaluation.coco import CocoGroundTruth, load_results

ALL_AREAS = [0.0, 1e10]  # COCOeval's area range "all"
MAX_DETS = 100


@dataclass(frozen=True)
class ImageErrors:
    """One image's error counts at (``iou_thr``, ``score_thr``)."""

    index: int  # dataset index
    image_id: int  # COCO image id
    file_name: str
    false_positives: int
    missed: int  # GT boxes not found

    @property
    def errors(self) -> int:
        return self.false_positives + self.missed

    def to_json(self) -> dict[str, Any]:
        return {"file_name": self.file_name, "image_id": self.image_id, "index": self.index,
                "errors": self.errors, "false_positives": self.false_positives,
                "missed": self.missed}


def _matching(gt: CocoGroundTruth, results: Sequence[dict[str, Any]],
              iou_thr: float) -> list[dict[str, Any] | None]:
    """pycocotools' per-(class, image) matching at one IoU threshold, area all, 100 dets."""
    coco_eval = COCOeval(gt.coco, load_results(gt.coco, list(results)), "bbox")
    params = coco_eval.params
    params.imgIds, params.catIds = list(gt.img_ids), list(gt.cat_ids)
    params.iouThrs = np.array([iou_thr])
    params.areaRng, params.areaRngLbl, params.maxDets = [ALL_AREAS], ["all"], [MAX_DETS]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval.evaluate()
    return coco_eval.evalImgs


def _counts(match: dict[str, Any], score_thr: float) -> tuple[int, int]:
    """(false positives, missed GT) of one (class, image) ``evaluateImg`` record."""
    scores = np.asarray(match["dtScores"], dtype=float)  # (D,)
    kept = scores >= score_thr  # (D,)
    matched = np.asarray(match["dtMatches"][0]) > 0  # (D,) matched GT id, 0 if none
    ignored = np.asarray(match["dtIgnore"][0], dtype=bool)  # (D,)
    false_positives = int((kept & ~matched & ~ignored).sum())
    score_of = dict(zip(match["dtIds"], scores.tolist()))
    gt_match = np.asarray(match["gtMatches"][0])  # (G,) matched detection id, 0 if none
    gt_ignored = np.asarray(match["gtIgnore"], dtype=bool)  # (G,)
    found = np.array([m > 0 and score_of.get(int(m), -1.0) >= score_thr for m in gt_match],
                     dtype=bool)  # (G,)
    return false_positives, int((~found & ~gt_ignored).sum())


def image_errors(gt: CocoGroundTruth, results: Sequence[dict[str, Any]], *,
                 iou_thr: float = 0.5, score_thr: float = 0.3) -> list[ImageErrors]:
    """:class:`ImageErrors` of every dataset image (I, dataset order); see the module docstring."""
    row_of = {image_id: i for i, image_id in enumerate(gt.img_ids)}
    fps, missed = np.zeros(len(gt.img_ids), np.int64), np.zeros(len(gt.img_ids), np.int64)
    for match in _matching(gt, results, iou_thr):
        if match is None:  # neither GT nor detections of that class on that image
            continue
        i = row_of[int(match["image_id"])]
        n_fp, n_missed = _counts(match, score_thr)
        fps[i] += n_fp
        missed[i] += n_missed
    return [ImageErrors(i, int(image_id), str(gt.coco.imgs[image_id].get("file_name", image_id)),
                        int(fps[i]), int(missed[i]))
            for i, image_id in enumerate(gt.img_ids)]


def worst_images(errors: Sequence[ImageErrors], top: int) -> list[ImageErrors]:
    """The ``top`` images with the most errors (module docstring's order), none without."""
    ranked = sorted((e for e in errors if e.errors > 0),
                    key=lambda e: (-e.errors, -e.missed, e.index))
    return ranked[:top]
