"""Per-class AP, AP50, AP75 and AP by area (ClassAP), and the accumulated arrays in label order.

One 40 x 40 GT (COCO "medium", 1600 px) found by one detection of IoU 0.62 (40 x 24.8): it is a
TP at the IoU thresholds 0.50, 0.55, 0.60 and a FP (with the GT missed) at the seven above, so
the class's precision is 1 at every recall threshold for t <= 0.60 and 0 for t >= 0.65:
AP = 3/10, AP50 = 1, AP75 = 0, AP_m = AP = 0.3, AP_s = AP_l = None (no small or large GT).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from detcli.data.datasets import CocoDataset
from detcli.errors import DetError
from detcli.evaluation.coco import CocoEvaluator
from tests.evaluation.test_coco import CAT, DOG, ListDataset, dets


def test_class_ap_at_iou_50_and_75_differ_and_areas_follow_the_gt():
    ds = ListDataset([([[0, 0, 40, 40], [50, 50, 90, 90]], [CAT, DOG])])
    found = [dets(([0, 0, 40, 24.8], 0.9, CAT), ([50, 50, 90, 90], 0.8, DOG))]
    scores = CocoEvaluator(ds).score_results(CocoEvaluator(ds).results(found))
    cat, dog = scores.per_class
    assert (cat.name, cat.ap75, cat.ap_s, cat.ap_l) == ("cat", 0.0, None, None)
    assert (cat.ap, cat.ap50, cat.ap_m) == pytest.approx((0.3, 1.0, 0.3))
    assert (dog.ap, dog.ap50, dog.ap75, dog.ap_m) == pytest.approx((1.0, 1.0, 1.0, 1.0))
    # the metrics dict carries the same rows, today's keys first
    assert scores.metrics["per_class"][0] == {"class": "cat", "AP": cat.ap, "AP50": cat.ap50,
                                              "AP75": 0.0, "AP_s": None, "AP_m": cat.ap_m,
                                              "AP_l": None}
    # the rows are the accumulated precision's means: t = 0 (IoU 0.50) and t = 5 (IoU 0.75)
    acc = scores.accumulated
    assert acc.precision.shape == (10, 101, 2, 4, 3)
    assert acc.iou_index(0.5) == 0 and acc.iou_index(0.75) == 5
    np.testing.assert_allclose(acc.precision[:3, :, CAT, 0, -1], 1.0)
    np.testing.assert_array_equal(acc.precision[3:, :, CAT, 0, -1], 0.0)
    np.testing.assert_array_equal(acc.precision[:, :, CAT, 1, -1], -1.0)  # no small GT
    assert (scores.metrics["bbox_mAP_50"], scores.metrics["bbox_mAP_75"]) == pytest.approx((1.0, 0.5))


def test_accumulated_columns_are_in_label_order_not_category_id_order(tmp_path):
    # label 0 is "b" (category id 3), label 1 is "a" (id 1): COCOeval sorts ids, so its column
    # 0 is "a"; the accumulated arrays put "b" (found) first and "a" (missed) second
    data = {"images": [{"id": 5, "file_name": "a.jpg", "width": 100, "height": 100}],
            "categories": [{"id": 1, "name": "a"}, {"id": 3, "name": "b"}],
            "annotations": [
                {"id": 1, "image_id": 5, "category_id": 3, "bbox": [10, 10, 40, 40], "area": 1600, "iscrowd": 0},
                {"id": 2, "image_id": 5, "category_id": 1, "bbox": [60, 60, 40, 40], "area": 1600, "iscrowd": 0}]}
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(data))
    ds = CocoDataset(ann_file=str(ann), img_prefix=str(tmp_path), classes=["b", "a"], test_mode=True)
    evaluator = CocoEvaluator(ds)
    scores = evaluator.score_results(evaluator.results([dets(([10, 10, 50, 50], 0.9, 0))]))
    np.testing.assert_allclose(scores.accumulated.precision[:, :, 0, 0, -1], 1.0)
    np.testing.assert_array_equal(scores.accumulated.precision[:, :, 1, 0, -1], 0.0)
    np.testing.assert_array_equal(scores.accumulated.recall[:, :, 0, -1], [[1.0, 0.0]] * 10)
    assert [(r.name, r.ap) for r in scores.per_class] == [("b", pytest.approx(1.0)), ("a", 0.0)]


def test_an_iou_threshold_coco_did_not_accumulate_is_an_error():
    ds = ListDataset([([[0, 0, 40, 40]], [CAT])])
    acc = CocoEvaluator(ds).score_results([]).accumulated
    with pytest.raises(DetError, match=r"IoU threshold 0.62 is not one COCOeval accumulated.*0.55"):
        acc.iou_index(0.62)
