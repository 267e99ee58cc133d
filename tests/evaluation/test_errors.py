"""The TIDE error breakdown on hand-built images where each error's dAP50 is known by hand.

COCO's AP at one IoU threshold is the mean over 101 recall thresholds of the interpolated
precision. With two GT boxes and only the first found, without a FP above it, precision is 1
up to recall 0.5 and 0 after: AP = 51/101 (HALF). A FP scoring above the only TP of a class
with one GT gives precision 0.5 at recall 1: AP = 0.5. Boxes: A, C cats, B a dog (40 x 40).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.cocoeval import COCOeval

from detcli.errors import ConfigError
from detcli.evaluation.coco import CocoGroundTruth, load_results, silent_coco
from detcli.evaluation.errors import (
    FP_TYPES,
    ErrorType,
    attribute_errors,
    error_breakdown,
    fixed_results,
    without_annotations,
)
from tests.evaluation.test_confusion import CAT, DOG, ground_truth, result

HALF = 51 / 101
A, B, C = [0, 0, 40, 40], [50, 50, 90, 90], [60, 0, 100, 40]
LOOSE_B = [50, 50, 90, 62]  # IoU 480 / 1600 = 0.3 with B, 0 with A and C
FAR = [0, 60, 20, 80]  # overlaps nothing


def deltas(breakdown) -> dict[ErrorType, float]:
    return {impact.type: impact.delta_ap for impact in breakdown.impacts}


def assert_only(breakdown, error: ErrorType, delta: float) -> None:
    """``error`` is worth ``delta`` and every other type nothing."""
    got = deltas(breakdown)
    assert got[error] == pytest.approx(delta, abs=1e-9)
    assert all(v == pytest.approx(0.0, abs=1e-9) for t, v in got.items() if t is not error)


def test_a_localisation_error_fixed_finds_the_second_gt():
    gt = ground_truth([[(A, CAT, 0), (B, CAT, 0)]])
    eb = error_breakdown(gt, [result(1, A, CAT, 0.9), result(1, LOOSE_B, CAT, 0.8)])
    assert eb.ap50 == pytest.approx(HALF)
    assert_only(eb, ErrorType.LOC, 1.0 - HALF)
    assert eb.impact(ErrorType.LOC).count == 1
    assert eb.impact(ErrorType.MISSED).count == 0  # B is the loc error's: not missed


def test_a_localisation_error_on_a_found_gt_is_removed():
    gt = ground_truth([[(A, CAT, 0)]])
    loose_a = [0, 0, 40, 12]  # IoU 0.3 with A
    eb = error_breakdown(gt, [result(1, loose_a, CAT, 0.9), result(1, A, CAT, 0.8)])
    assert eb.ap50 == pytest.approx(0.5)
    assert_only(eb, ErrorType.LOC, 0.5)


def test_a_classification_error_fixed_becomes_the_other_class_tp():
    gt = ground_truth([[(A, CAT, 0), (B, DOG, 0)]])
    eb = error_breakdown(gt, [result(1, A, CAT, 0.9), result(1, B, CAT, 0.8)])
    np.testing.assert_allclose(eb.ap50_per_class, [1.0, 0.0])  # the FP comes after cat's TP
    assert eb.ap50 == pytest.approx(0.5)
    assert_only(eb, ErrorType.CLS, 0.5)
    np.testing.assert_allclose(eb.impact(ErrorType.CLS).delta_ap_per_class, [0.0, 1.0])
    np.testing.assert_array_equal(eb.impact(ErrorType.CLS).count_per_class, [1, 0])  # a cat's


def test_wrong_class_and_mislocalised_is_both_and_its_gt_is_missed():
    gt = ground_truth([[(A, CAT, 0), (B, DOG, 0)]])
    eb = error_breakdown(gt, [result(1, LOOSE_B, CAT, 0.95), result(1, A, CAT, 0.9)])
    np.testing.assert_allclose(eb.ap50_per_class, [0.5, 0.0])
    assert_only(eb, ErrorType.BOTH, 0.25)  # cat 0.5 -> 1.0, mean over two classes
    np.testing.assert_allclose(eb.impact(ErrorType.BOTH).delta_ap_per_class, [0.5, 0.0])
    missed = eb.impact(ErrorType.MISSED)
    assert missed.count == 1 and missed.count_per_class.tolist() == [0, 1]
    # removing the dog's only GT leaves it without GT: it keeps its AP (0), as TIDE scores it
    assert missed.delta_ap == 0.0


def test_a_duplicate_above_a_tp_costs_precision():
    gt = ground_truth([[(A, CAT, 0), (C, CAT, 0)]])
    dup = [0, 0, 40, 38]  # IoU 0.95 with A
    eb = error_breakdown(gt, [result(1, A, CAT, 0.9), result(1, dup, CAT, 0.8),
                              result(1, C, CAT, 0.7)])
    # TP, FP, TP: precision 1 up to recall 0.5 (51 thresholds), then 2/3 (50 thresholds)
    base = (51 + 50 * 2 / 3) / 101
    assert eb.ap50 == pytest.approx(base)
    assert_only(eb, ErrorType.DUPE, 1.0 - base)


def test_a_background_fp_above_the_tp_halves_ap():
    gt = ground_truth([[(A, CAT, 0)]])
    eb = error_breakdown(gt, [result(1, FAR, CAT, 0.9), result(1, A, CAT, 0.8)])
    assert eb.ap50 == pytest.approx(0.5)
    assert_only(eb, ErrorType.BKG, 0.5)


def test_a_missed_gt_removed_raises_recall():
    gt = ground_truth([[(A, CAT, 0), (C, CAT, 0)]])
    eb = error_breakdown(gt, [result(1, A, CAT, 0.9)])
    assert eb.ap50 == pytest.approx(HALF)
    assert_only(eb, ErrorType.MISSED, 1.0 - HALF)


def test_errors_on_one_gt_compete_and_only_the_highest_scoring_is_fixed():
    gt = ground_truth([[(B, DOG, 0)]])
    cls_error, loc_error = result(1, B, CAT, 0.9), result(1, LOOSE_B, DOG, 0.8)
    eb = error_breakdown(gt, [cls_error, loc_error])
    assert eb.impact(ErrorType.CLS).count == 1 and eb.impact(ErrorType.LOC).count == 1
    # the cat's fix makes it the dog's TP: dog AP 0 -> 1 (the loc error comes after it)
    assert eb.impact(ErrorType.CLS).delta_ap_per_class[DOG] == pytest.approx(1.0)
    # the loc error is not the best on B: its fix removes it, so the dog still has no TP
    assert eb.impact(ErrorType.LOC).delta_ap_per_class[DOG] == pytest.approx(0.0)


def test_every_detection_and_gt_of_a_mixed_image_gets_its_type():
    gt = ground_truth([[(A, CAT, 0), (B, DOG, 0), (C, CAT, 0)],
                       [([0, 0, 50, 50], CAT, 1)]])  # image 2: a crowd of cats
    results = [result(1, A, CAT, 0.9),  # TP
               result(1, [0, 0, 40, 38], CAT, 0.85),  # duplicate
               result(1, B, CAT, 0.8),  # classification
               result(1, FAR, DOG, 0.7),  # background
               result(2, [10, 10, 30, 30], CAT, 0.9),  # on the crowd: no error
               result(2, [60, 60, 90, 90], CAT, 0.6)]  # background (crowds are no GT)
    attribution = attribute_errors(gt, results)
    kinds = {int(i): t for i, t in zip(attribution.fp_index, attribution.fp_type)}
    assert {i: FP_TYPES[t] for i, t in kinds.items()} == {
        1: ErrorType.DUPE, 2: ErrorType.CLS, 3: ErrorType.BKG, 5: ErrorType.BKG}
    assert attribution.missed_ann_ids.tolist() == [3]  # C; B is the cls error's
    np.testing.assert_array_equal(attribution.errors_per_image([1, 2]), [4, 1])


def test_the_base_ap_is_cocoevals_ap50():
    rng = np.random.default_rng(1)
    images, results = [], []
    for i in range(1, 16):
        xy = rng.uniform(0, 60, (5, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(10, 40, (5, 2))], axis=1).tolist()
        images.append([(b, int(rng.integers(2)), 0) for b in boxes])
        for _ in range(7):
            box = (np.array(boxes[int(rng.integers(5))]) + rng.normal(0, 5, 4)).tolist()
            results.append(result(i, box, int(rng.integers(2)), float(rng.uniform())))
    gt = ground_truth(images)
    coco_eval = COCOeval(gt.coco, load_results(gt.coco, results), "bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    eb = error_breakdown(gt, results)
    assert eb.ap50 == pytest.approx(coco_eval.stats[1], abs=1e-12)
    assert all(impact.delta_ap >= -1e-12 for impact in eb.impacts)
    fps = sum(eb.impact(t).count for t in ErrorType if t is not ErrorType.MISSED)
    assert fps > 0
    payload = eb.to_json()
    assert [e["short"] for e in payload["errors"]] == ["Cls", "Loc", "Both", "Dupe", "Bkg",
                                                       "Miss"]


def test_thresholds_out_of_order_are_refused():
    gt = ground_truth([[(A, CAT, 0)]])
    with pytest.raises(ConfigError, match="background IoU < foreground IoU"):
        error_breakdown(gt, [], fg_iou=0.1, bg_iou=0.5)


def test_no_detections_are_all_misses():
    gt = ground_truth([[(A, CAT, 0), (B, DOG, 0)]])
    eb = error_breakdown(gt, [])
    assert eb.ap50 == 0.0
    assert eb.impact(ErrorType.MISSED).count == 2
    assert all(impact.delta_ap == 0.0 for impact in eb.impacts)


def test_localisation_is_tested_before_classification():
    dog = [20, 0, 60, 40]  # overlaps cat A: IoU 800 / 2400 = 1/3
    gt = ground_truth([[(A, CAT, 0), (dog, DOG, 0)]])
    attribution = attribute_errors(gt, [result(1, dog, CAT, 0.9)])  # on the dog, as a cat
    assert [FP_TYPES[t] for t in attribution.fp_type] == [ErrorType.LOC]  # TIDE's order
    assert attribution.fixed_gt.tolist() == [1]  # it becomes cat A's TP
    assert attribution.missed_ann_ids.tolist() == [2]


FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "tide_errors.json"


@pytest.mark.parametrize("case", json.loads(FIXTURE.read_text())["cases"],
                         ids=lambda case: f"seed{case['seed']}")
def test_the_breakdown_is_tides_own(case):
    """tidecv 1.0.1's numbers on random scenes (tools/tide_fixture.py wrote them)."""
    data = {k: case[k] for k in ("images", "annotations", "categories")}
    cat_ids = [c["id"] for c in case["categories"]]
    gt = CocoGroundTruth(silent_coco(data), [i["id"] for i in case["images"]], cat_ids,
                         [c["name"] for c in case["categories"]])
    eb = error_breakdown(gt, case["results"])
    tide = case["tide"]
    assert eb.ap50 == pytest.approx(tide["AP50"], abs=1e-9)
    for error in ErrorType:
        assert eb.impact(error).count == tide["counts"][error.short], error
        assert eb.impact(error).delta_ap == pytest.approx(tide["dAP50"][error.short], abs=1e-9)


def full_ap50_per_class(gt_coco, results, gt) -> np.ndarray:
    """Per-class AP50 from a whole COCOeval run (iouThrs [0.5], area all, maxDets 100)."""
    coco_eval = COCOeval(gt_coco, load_results(gt_coco, results), "bbox")
    coco_eval.params.iouThrs = np.array([0.5])
    coco_eval.params.areaRng, coco_eval.params.areaRngLbl = [[0.0, 1e10]], ["all"]
    coco_eval.params.maxDets = [100]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval.evaluate()
        coco_eval.accumulate()
    precision = coco_eval.eval["precision"][0, :, :, 0, 0]  # (R, K), categories sorted = labels
    return np.array([precision[:, k].mean() if (precision[:, k] > -1).any() else np.nan
                     for k in range(len(gt.cat_ids))])


def test_each_fixed_run_equals_a_whole_cocoeval_of_the_fixed_results():
    """Only the (image, category) pairs a fix changes are evaluated again; the AP must be
    that of pycocotools run from scratch on the fixed results (or the GT without misses)."""
    case = json.loads(FIXTURE.read_text())["cases"][0]
    data = {k: case[k] for k in ("images", "annotations", "categories")}
    gt = CocoGroundTruth(silent_coco(data), [i["id"] for i in case["images"]],
                         [c["id"] for c in case["categories"]],
                         [c["name"] for c in case["categories"]])
    results = case["results"]
    eb = error_breakdown(gt, results)
    attribution = attribute_errors(gt, results)
    for error in ErrorType:
        if error is ErrorType.MISSED:
            full = full_ap50_per_class(without_annotations(gt.coco, attribution.missed_ann_ids),
                                       results, gt)
        else:
            full = full_ap50_per_class(gt.coco, fixed_results(results, attribution, error,
                                                              gt.coco), gt)
        np.testing.assert_allclose(eb.ap50_per_class + eb.impact(error).delta_ap_per_class,
                                   full, atol=1e-12, err_msg=error.value)
