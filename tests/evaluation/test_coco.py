"""CocoEvaluator: hand-computed COCO numbers, and the same numbers pycocotools gives directly.

Every box below is 40 x 40 (COCO "medium"). With one class, a TP at score 0.9 and a miss, the
precision is 1 up to recall 0.5 and nothing after: AP = 51/101 at every IoU threshold (the 51
recall thresholds 0.00..0.50 of 101). A FP scoring above the only TP gives precision 0.5 at
recall 1: AP = 0.5.
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detcli.data.datasets import CocoDataset
from detcli.evaluation.coco import (
    METRIC_KEYS,
    CocoEvaluator,
    detections_to_coco,
    write_results,
)
from detcli.errors import DetError
from detcli.structures.detections import Detections

CAT, DOG = 0, 1
HALF = 51 / 101  # AP of a class whose GT is half found, without a FP above the TP


class ListDataset:
    """The dataset interface evaluation reads: CLASSES, img_infos, get_ann_info, ignore labels."""

    CLASSES = ("cat", "dog")

    def __init__(self, gts: list[tuple[list, list]], ignores: list[tuple[list, list]] | None = None,
                 with_ignore_labels: bool = True) -> None:
        self.gts = gts
        self.ignores = ignores or [([], [])] * len(gts)
        self.img_infos = [{"id": 101 + i, "file_name": f"{i}.jpg", "height": 100, "width": 100}
                          for i in range(len(gts))]
        if with_ignore_labels:
            self.get_ignore_labels = lambda i: np.array(self.ignores[i][1], dtype=np.int64)

    def get_ann_info(self, i: int) -> dict[str, np.ndarray]:
        boxes, labels = self.gts[i]
        return {"bboxes": np.array(boxes, dtype=np.float32).reshape(-1, 4),
                "labels": np.array(labels, dtype=np.int64),
                "bboxes_ignore": np.array(self.ignores[i][0], dtype=np.float32).reshape(-1, 4)}


def dets(*rows: tuple[list[float], float, int]) -> Detections:
    """Detections from (box, score, label) rows."""
    return Detections(torch.tensor([r[0] for r in rows], dtype=torch.float32).reshape(-1, 4),
                      torch.tensor([r[1] for r in rows], dtype=torch.float32),
                      torch.tensor([r[2] for r in rows], dtype=torch.long))


def pycocotools_stats(dataset: ListDataset, detections: list[Detections]) -> np.ndarray:
    """COCOeval's 12 stats computed directly from hand-written COCO dicts (category = label+1)."""
    images, anns = [], []
    for i, info in enumerate(dataset.img_infos):
        images.append({"id": info["id"], "height": 100, "width": 100})
        boxes, labels = dataset.gts[i]
        crowd_boxes, crowd_labels = dataset.ignores[i]
        for box, label, crowd in [(b, lab, 0) for b, lab in zip(boxes, labels)] + \
                                 [(b, lab, 1) for b, lab in zip(crowd_boxes, crowd_labels)]:
            w, h = box[2] - box[0], box[3] - box[1]
            anns.append({"id": len(anns) + 1, "image_id": info["id"], "category_id": label + 1,
                         "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": crowd})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns,
                  "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}
    results = []
    for info, d in zip(dataset.img_infos, detections):
        for box, score, label in zip(d.boxes.tolist(), d.scores.tolist(), d.labels.tolist()):
            results.append({"image_id": info["id"], "category_id": label + 1, "score": score,
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        coco_eval = COCOeval(gt, gt.loadRes(results), "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats


def evaluate(dataset, detections) -> dict:
    return CocoEvaluator(dataset).evaluate(detections)


def stats_of(metrics: dict) -> np.ndarray:
    return np.array([metrics[k] for k in METRIC_KEYS])


def per_class(metrics: dict) -> dict[str, float | None]:
    return {entry["class"]: entry["AP"] for entry in metrics["per_class"]}


def test_perfect_detections_score_1():
    ds = ListDataset([([[10, 10, 50, 50]], [CAT]), ([[20, 20, 60, 60], [50, 50, 90, 90]], [DOG, CAT])])
    found = [dets(([10, 10, 50, 50], 0.9, CAT)),
             dets(([20, 20, 60, 60], 0.8, DOG), ([50, 50, 90, 90], 0.7, CAT))]
    metrics = evaluate(ds, found)
    assert metrics["bbox_mAP"] == 1.0 and metrics["bbox_mAP_50"] == 1.0 and metrics["bbox_AR@100"] == 1.0
    assert metrics["bbox_mAP_m"] == 1.0 and metrics["bbox_mAP_s"] == -1.0  # no small GT
    assert per_class(metrics) == {"cat": 1.0, "dog": pytest.approx(1.0)}
    np.testing.assert_array_equal(stats_of(metrics), pycocotools_stats(ds, found))


def test_false_positive_and_missed_gt():
    # cat: 2 GT, one found (0.9), one FP elsewhere (0.8): AP 51/101; dog: perfect
    ds = ListDataset([([[10, 10, 50, 50], [60, 60, 100, 100]], [CAT, CAT]), ([[20, 20, 60, 60]], [DOG])])
    found = [dets(([10, 10, 50, 50], 0.9, CAT), ([0, 60, 40, 100], 0.8, CAT)),
             dets(([20, 20, 60, 60], 0.9, DOG))]
    metrics = evaluate(ds, found)
    assert per_class(metrics)["cat"] == pytest.approx(HALF)
    assert per_class(metrics)["dog"] == pytest.approx(1.0)
    assert metrics["bbox_mAP"] == pytest.approx((HALF + 1.0) / 2)
    assert metrics["bbox_AR@100"] == pytest.approx((0.5 + 1.0) / 2)
    np.testing.assert_array_equal(stats_of(metrics), pycocotools_stats(ds, found))


def test_image_without_gt_counts_its_detections_as_false_positives():
    # dog: one TP (0.9) on image 0, a FP scoring higher (0.95) on image 1, which has no GT
    ds = ListDataset([([[20, 20, 60, 60]], [DOG]), ([], [])])
    found = [dets(([20, 20, 60, 60], 0.9, DOG)), dets(([0, 0, 40, 40], 0.95, DOG))]
    metrics = evaluate(ds, found)
    assert per_class(metrics) == {"cat": None, "dog": pytest.approx(0.5)}  # no cat GT: None
    assert metrics["bbox_mAP"] == pytest.approx(0.5)
    np.testing.assert_array_equal(stats_of(metrics), pycocotools_stats(ds, found))


def test_image_without_detections_counts_its_gt_as_missed():
    ds = ListDataset([([[10, 10, 50, 50]], [CAT]), ([[30, 30, 70, 70]], [CAT])])
    found = [dets(([10, 10, 50, 50], 0.9, CAT)), dets()]
    metrics = evaluate(ds, found)
    assert per_class(metrics)["cat"] == pytest.approx(HALF)
    assert metrics["bbox_AR@100"] == pytest.approx(0.5)
    np.testing.assert_array_equal(stats_of(metrics), pycocotools_stats(ds, found))


def test_no_detections_at_all_gives_zero_not_a_crash():
    ds = ListDataset([([[10, 10, 50, 50]], [CAT]), ([], [])])
    metrics = evaluate(ds, [dets(), dets()])
    assert metrics["bbox_mAP"] == 0.0 and metrics["bbox_AR@100"] == 0.0
    assert per_class(metrics) == {"cat": 0.0, "dog": None}


def test_detection_on_an_ignore_box_is_not_a_false_positive():
    # a dog crowd region in image 0: the 0.95 dog detection inside it is ignored, not a FP
    ds = ListDataset([([[10, 10, 50, 50]], [DOG])], ignores=[([[60, 60, 100, 100]], [DOG])])
    found = [dets(([62, 62, 98, 98], 0.95, DOG), ([10, 10, 50, 50], 0.9, DOG))]
    metrics = evaluate(ds, found)
    assert per_class(metrics)["dog"] == pytest.approx(1.0)
    np.testing.assert_array_equal(stats_of(metrics), pycocotools_stats(ds, found))
    # the same region labelled cat does not excuse a dog detection: the dog FP comes first
    ds_cat = ListDataset([([[10, 10, 50, 50]], [DOG])], ignores=[([[60, 60, 100, 100]], [CAT])])
    assert per_class(evaluate(ds_cat, found))["dog"] == pytest.approx(0.5)


def test_ignore_boxes_of_unknown_class_ignore_every_class():
    ds = ListDataset([([[10, 10, 50, 50]], [DOG])], ignores=[([[60, 60, 100, 100]], [CAT])],
                     with_ignore_labels=False)
    found = [dets(([62, 62, 98, 98], 0.95, DOG), ([10, 10, 50, 50], 0.9, DOG))]
    assert per_class(evaluate(ds, found))["dog"] == pytest.approx(1.0)


def test_results_are_coco_xywh_with_dataset_ids():
    results = detections_to_coco([dets(([10, 20, 40, 60], 0.5, 1), ([0, 0, 2, 3], 0.25, 0)), dets()],
                                 img_ids=[7, 9], cat_ids=[3, 11])
    assert results == [
        {"image_id": 7, "category_id": 11, "bbox": [10.0, 20.0, 30.0, 40.0], "score": 0.5},
        {"image_id": 7, "category_id": 3, "bbox": [0.0, 0.0, 2.0, 3.0], "score": 0.25},
    ]
    with pytest.raises(DetError, match="detections for 1 images but the dataset has 2"):
        detections_to_coco([dets()], img_ids=[7, 9], cat_ids=[3, 11])


def test_write_results_is_plain_coco_json_untouched_by_evaluation(tmp_path):
    ds = ListDataset([([[10, 10, 50, 50]], [CAT])])
    evaluator = CocoEvaluator(ds)
    results = evaluator.results([dets(([10, 10, 50, 50], 0.75, CAT))])
    evaluator.evaluate_results(results)  # pycocotools' loadRes adds keys to what it is given
    path = write_results(tmp_path / "out" / "results.json", results)
    assert json.loads(path.read_text()) == [
        {"image_id": 101, "category_id": 1, "bbox": [10.0, 10.0, 40.0, 40.0], "score": 0.75}]


def test_coco_dataset_is_evaluated_against_its_own_file_with_its_category_ids(tmp_path):
    data = {
        "images": [{"id": 5, "file_name": "a.jpg", "width": 100, "height": 100},
                   {"id": 6, "file_name": "b.jpg", "width": 100, "height": 100}],
        "categories": [{"id": 1, "name": "a"}, {"id": 3, "name": "b"}],
        "annotations": [
            {"id": 1, "image_id": 5, "category_id": 3, "bbox": [10, 10, 40, 40], "area": 1600, "iscrowd": 0},
            {"id": 2, "image_id": 5, "category_id": 1, "bbox": [60, 60, 40, 40], "area": 1600, "iscrowd": 0},
            {"id": 3, "image_id": 6, "category_id": 1, "bbox": [0, 0, 40, 40], "area": 1600, "iscrowd": 0},
        ],
    }
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(data))
    # classes in non-id order: label 0 is "b" (id 3), label 1 is "a" (id 1); image 6 is kept
    ds = CocoDataset(ann_file=str(ann), img_prefix=str(tmp_path), classes=["b", "a"], test_mode=True)
    found = [dets(([10, 10, 50, 50], 0.9, 0), ([60, 60, 100, 100], 0.8, 1)), dets()]
    evaluator = CocoEvaluator(ds)
    assert evaluator.gt.coco is ds.coco and evaluator.gt.cat_ids == [3, 1]
    assert [r["category_id"] for r in evaluator.results(found)] == [3, 1]
    metrics = evaluator.evaluate(found)
    assert per_class(metrics) == {"b": pytest.approx(1.0), "a": pytest.approx(HALF)}  # a's GT on image 6 missed
