"""PR curves read from pycocotools' accumulated precision, on a case worked by hand.

cat: 2 GT (A, B, 40 x 40) and 3 detections: 0.9 on A (IoU 1), 0.8 on nothing, 0.7 on B with
IoU 0.62 (40 x 24.8). At IoU 0.5 the ranked list is TP, FP, TP: recall 1/2, 1/2, 1 and
precision 1, 1/2, 2/3; interpolated (best precision at any recall >= r) 1, 2/3, 2/3; so at the
101 recall thresholds r = 0.00..1.00 the precision is 1 for r <= 0.50 (51 points) and 2/3 for
r > 0.50 (50 points): AP50 = (51 + 50 * 2/3) / 101. At IoU 0.75 the 0.7 detection is a FP:
recall never passes 1/2, so 51 ones then 50 zeros: AP75 = 51/101.
dog: one GT found exactly: precision 1 everywhere at both IoUs.
"""

from __future__ import annotations

import numpy as np
import pytest

from detcli.evaluation.coco import CocoEvaluator
from detcli.evaluation.pr_curves import pr_curves
from tests.evaluation.test_coco import CAT, DOG, ListDataset, dets

A, B = [0, 0, 40, 40], [50, 50, 90, 90]
CAT_50 = np.array([1.0] * 51 + [2 / 3] * 50)
CAT_75 = np.array([1.0] * 51 + [0.0] * 50)


def worked_case():
    ds = ListDataset([([A, B], [CAT, CAT]), ([A], [DOG])])
    found = [dets((A, 0.9, CAT), ([0, 50, 40, 90], 0.8, CAT), ([50, 50, 90, 74.8], 0.7, CAT)),
             dets((A, 0.9, DOG))]
    evaluator = CocoEvaluator(ds)
    return evaluator.score_results(evaluator.results(found))


def test_class_curves_are_the_hand_computed_101_points():
    scores = worked_case()
    at50 = pr_curves(scores.accumulated, ["cat", "dog"], 0.5)
    at75 = pr_curves(scores.accumulated, ["cat", "dog"], 0.75)
    np.testing.assert_allclose(at50.recall, np.linspace(0, 1, 101))
    np.testing.assert_allclose(at50.precision[CAT], CAT_50)
    np.testing.assert_allclose(at75.precision[CAT], CAT_75)
    np.testing.assert_allclose(at50.precision[DOG], 1.0)
    assert at50.ap == pytest.approx([(51 + 50 * 2 / 3) / 101, 1.0])
    assert at75.ap == pytest.approx([51 / 101, 1.0])
    # the per-class table's AP50 / AP75 are the same numbers
    assert [r.ap50 for r in scores.per_class] == pytest.approx(at50.ap)
    assert [r.ap75 for r in scores.per_class] == pytest.approx(at75.ap)


def test_all_classes_curve_is_the_mean_and_its_ap_is_coco_map():
    scores = worked_case()
    at50 = pr_curves(scores.accumulated, ["cat", "dog"], 0.5)
    np.testing.assert_allclose(at50.mean_precision, (CAT_50 + 1.0) / 2)
    assert at50.mean_ap == pytest.approx(scores.metrics["bbox_mAP_50"])
    at75 = pr_curves(scores.accumulated, ["cat", "dog"], 0.75)
    assert at75.mean_ap == pytest.approx(scores.metrics["bbox_mAP_75"])


def test_a_class_without_gt_has_no_curve_and_does_not_pull_the_mean_down():
    ds = ListDataset([([A], [CAT])])
    evaluator = CocoEvaluator(ds)
    scores = evaluator.score_results(evaluator.results([dets((A, 0.9, CAT), (B, 0.8, DOG))]))
    curves = pr_curves(scores.accumulated, ["cat", "dog"], 0.5)
    assert curves.ap[DOG] is None and np.isnan(curves.precision[DOG]).all()
    np.testing.assert_allclose(curves.mean_precision, 1.0)
    payload = curves.to_json()
    assert payload["classes"][DOG] == {"class": "dog", "AP": None, "precision": None}
    assert payload["all"]["AP"] == pytest.approx(1.0) and len(payload["recall"]) == 101


def test_no_gt_at_all_gives_no_mean():
    ds = ListDataset([([], [])])
    curves = pr_curves(CocoEvaluator(ds).score_results([]).accumulated, ["cat", "dog"], 0.5)
    assert curves.mean_ap is None and curves.ap == [None, None]
