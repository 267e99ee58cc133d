"""Errors per image (false positives and missed GT at IoU 0.5, score >= 0.3, read from the
confusion matrix's matching) and their ranking, on hand-built images whose counts are known."""

from __future__ import annotations

import pytest

from detcli.errors import DetError
from detcli.evaluation.coco import CocoEvaluator
from detcli.evaluation.confusion import confusion_matrix
from detcli.evaluation.worst_images import image_errors, worst_images
from tests.evaluation.test_coco import CAT, DOG, ListDataset, dets

A, B, C = [0, 0, 40, 40], [50, 50, 90, 90], [0, 50, 40, 90]


def case():
    ds = ListDataset(
        [([A, B], [CAT, CAT]),  # 0: A found (0.9), FP on C (0.8), B only found at 0.2: 1 FP, 1 miss
         ([A], [DOG]),  # 1: found only below the score threshold (0.25): 1 miss
         ([A], [CAT]),  # 2: found as a dog: a dog FP and a missed cat
         ([A], [CAT]),  # 3: perfect
         ([A], [CAT]),  # 4: found twice: the duplicate (0.85) is a FP
         ([A], [CAT]),  # 5: a cat on a cat crowd region (ignored) and a FP below the threshold
         ([A], [DOG])],  # 6: IoU 0.45 with its GT (40 x 18): a FP and a miss at IoU 0.5
        ignores=[([], [])] * 5 + [([B], [CAT])] + [([], [])])
    found = [dets((A, 0.9, CAT), (C, 0.8, CAT), (B, 0.2, CAT)),
             dets((A, 0.25, DOG)),
             dets((A, 0.9, DOG)),
             dets((A, 0.9, CAT)),
             dets((A, 0.9, CAT), (A, 0.85, CAT)),
             dets((A, 0.9, CAT), ([52, 52, 88, 88], 0.95, CAT), (C, 0.1, CAT)),
             dets(([0, 0, 40, 18], 0.9, DOG))]
    evaluator = CocoEvaluator(ds)
    return evaluator, evaluator.results(found)


def errors_at(evaluator, results, iou_thr=0.5, score_thr=0.3):
    confusion = confusion_matrix(evaluator.gt, results, iou_thr=iou_thr, score_thr=score_thr)
    return image_errors(evaluator.gt, confusion)


def test_counts_per_image_by_hand():
    evaluator, results = case()
    errors = errors_at(evaluator, results)
    assert [(e.false_positives, e.missed) for e in errors] == [
        (1, 1), (0, 1), (1, 1), (0, 0), (1, 0), (0, 0), (1, 1)]
    assert [e.file_name for e in errors] == [f"{i}.jpg" for i in range(7)]
    assert [e.image_id for e in errors] == [101 + i for i in range(7)]


def test_thresholds_change_the_counts():
    evaluator, results = case()
    low = errors_at(evaluator, results, score_thr=0.0)  # every detection counts
    assert [(e.false_positives, e.missed) for e in low] == [
        (1, 0), (0, 0), (1, 1), (0, 0), (1, 0), (1, 0), (1, 1)]  # image 5: C at 0.1 is a FP now
    loose = errors_at(evaluator, results, iou_thr=0.4)
    assert (loose[6].false_positives, loose[6].missed) == (0, 0)  # IoU 0.45 matches at 0.4


def test_ranking_most_errors_then_most_missed_then_dataset_order():
    evaluator, results = case()
    ranked = worst_images(errors_at(evaluator, results), top=4)
    assert [e.index for e in ranked] == [0, 2, 6, 1]  # 2, 2, 2 errors; then 1 miss before 1 FP
    assert ranked[0].to_json() == {"file_name": "0.jpg", "image_id": 101, "index": 0,
                                   "errors": 2, "false_positives": 1, "missed": 1}
    assert [e.index for e in worst_images(errors_at(evaluator, results), top=10)] == [0, 2, 6, 1, 4]


def test_a_matrix_of_other_images_is_refused():
    evaluator, results = case()
    other = CocoEvaluator(ListDataset([([A], [CAT])]))
    confusion = confusion_matrix(other.gt, [], iou_thr=0.5, score_thr=0.3)
    with pytest.raises(DetError, match="other images than the GT's"):
        image_errors(evaluator.gt, confusion)
