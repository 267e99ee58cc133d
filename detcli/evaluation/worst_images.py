"""The images with the most errors, by file name (``det test --plots``'s report).

I images. An image's *errors* are read from the confusion matrix's one-to-one matching
(:func:`detcli.evaluation.confusion.confusion_matrix`, at its ``iou_thr`` and ``score_thr``;
``det test --conf-iou 0.5 --conf-score 0.3`` by default), so the list and the matrix count the
same things:

- **false positives**: detections scoring >= ``score_thr`` that are not a match of a GT box of
  their own class and not on a crowd region: background detections, duplicates of a box already
  found, and detections of the wrong class (the matrix's background row and off-diagonal cells);
- **missed GT**: GT boxes (not crowd) that no detection scoring >= ``score_thr`` found as their
  class (the matrix's background column and off-diagonal cells).

Images are ranked by errors (false positives + missed GT), then by missed GT, then in dataset
order; images without errors are not listed. The detections counted are those a user sees with
``det test --show-dir DIR --show-score-thr`` at the same score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from detcli.errors import DetError
from detcli.evaluation.coco import CocoGroundTruth
from detcli.evaluation.confusion import ConfusionMatrix


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


def image_errors(gt: CocoGroundTruth, confusion: ConfusionMatrix) -> list[ImageErrors]:
    """:class:`ImageErrors` of every dataset image (I, dataset order) from ``confusion``'s
    per-image counts (module docstring)."""
    if [int(i) for i in confusion.image_ids] != [int(i) for i in gt.img_ids]:
        raise DetError("the confusion matrix was counted on other images than the GT's; build "
                       "both from the same dataset")
    return [ImageErrors(i, int(image_id), str(gt.coco.imgs[image_id].get("file_name", image_id)),
                        int(confusion.image_false_positives[i]), int(confusion.image_missed[i]))
            for i, image_id in enumerate(gt.img_ids)]


def worst_images(errors: Sequence[ImageErrors], top: int) -> list[ImageErrors]:
    """The ``top`` images with the most errors (module docstring's order), none without."""
    ranked = sorted((e for e in errors if e.errors > 0),
                    key=lambda e: (-e.errors, -e.missed, e.index))
    return ranked[:top]
