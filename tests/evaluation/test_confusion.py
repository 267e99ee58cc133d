"""The confusion matrix on hand-built images whose every cell is known.

Classes cat (0) and dog (1); K = 2, so index 2 is "background". Image 1 holds one case of each
kind: a TP, a duplicate of it, a cat detection on a dog (wrong class), a background FP, a GT
cat nobody found (the only detection on it scores under the threshold). Image 2 holds a crowd
region with a detection inside it (left out) and a dog found by a dog detection although a cat
detection scoring higher sits on it too (same class is matched first: the cat one is a FP).
"""

from __future__ import annotations

import numpy as np
import pytest

from detcli.errors import ConfigError, DataError
from detcli.evaluation.coco import CocoGroundTruth, silent_coco
from detcli.evaluation.confusion import confusion_matrix

CAT, DOG, BG = 0, 1, 2


def ground_truth(images: list[list[tuple[list[float], int, int]]]) -> CocoGroundTruth:
    """GT of images given as (x1, y1, x2, y2 box, label, iscrowd) rows; category = label + 1,
    image ids 1, 2, ..."""
    imgs, anns = [], []
    for i, rows in enumerate(images, start=1):
        imgs.append({"id": i, "file_name": f"{i}.jpg", "height": 100, "width": 100})
        for (x1, y1, x2, y2), label, crowd in rows:
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": label + 1,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                         "iscrowd": crowd})
    cats = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    coco = silent_coco({"images": imgs, "annotations": anns, "categories": cats})
    return CocoGroundTruth(coco, list(range(1, len(images) + 1)), [1, 2], ["cat", "dog"])


def result(image_id: int, box: list[float], label: int, score: float) -> dict:
    x1, y1, x2, y2 = box
    return {"image_id": image_id, "category_id": label + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
            "score": score}


A, B, C = [0, 0, 40, 40], [50, 50, 90, 90], [60, 0, 95, 30]  # image 1: cat, dog, cat
D, CROWD = [0, 60, 40, 100], [0, 0, 50, 50]  # image 2: dog, a crowd of cats

GT = ground_truth([[(A, CAT, 0), (B, DOG, 0), (C, CAT, 0)],
                   [(D, DOG, 0), (CROWD, CAT, 1)]])
RESULTS = [
    result(1, A, CAT, 0.9),  # TP
    result(1, [0, 0, 40, 38], CAT, 0.8),  # IoU 0.95 with A, which is taken: a duplicate
    result(1, B, CAT, 0.7),  # a cat on the dog
    result(1, [0, 50, 20, 70], DOG, 0.6),  # on nothing: background
    result(1, C, DOG, 0.2),  # under the score threshold: C stays missed
    result(2, [10, 10, 30, 30], DOG, 0.9),  # inside the crowd: left out
    result(2, D, CAT, 0.95),  # on the dog, wrong class, higher score than the dog below
    result(2, D, DOG, 0.4),  # TP: same class is matched first
]


def test_every_cell_of_the_hand_built_case():
    cm = confusion_matrix(GT, RESULTS, iou_thr=0.5, score_thr=0.3)
    expected = np.zeros((3, 3), dtype=np.int64)
    expected[CAT, CAT] = 1  # A
    expected[CAT, BG] = 1  # C missed
    expected[DOG, CAT] = 1  # B found as a cat
    expected[DOG, DOG] = 1  # D
    expected[BG, CAT] = 2  # the duplicate on A, the cat on D
    expected[BG, DOG] = 1  # the background detection
    np.testing.assert_array_equal(cm.counts, expected)
    assert cm.labels == ["cat", "dog", "background"]
    np.testing.assert_array_equal(cm.image_ids, [1, 2])
    np.testing.assert_array_equal(cm.image_false_positives, [3, 1])  # dup, wrong class, bkg | cat
    np.testing.assert_array_equal(cm.image_missed, [2, 0])  # B (as a cat), C


def test_rows_normalise_to_one_and_an_empty_row_stays_zero():
    cm = confusion_matrix(GT, RESULTS)
    norm = cm.normalised()
    np.testing.assert_allclose(norm, [[0.5, 0, 0.5], [0.5, 0.5, 0], [2 / 3, 1 / 3, 0]])
    no_fp = confusion_matrix(GT, [result(1, A, CAT, 0.9)])
    np.testing.assert_array_equal(no_fp.normalised()[BG], [0, 0, 0])
    payload = cm.to_json()
    assert payload["classes"] == ["cat", "dog", "background"]
    assert payload["counts"] == cm.counts.tolist()
    assert payload["iou_thr"] == 0.5 and payload["score_thr"] == 0.3


def test_thresholds_are_inclusive():
    half = [0, 0, 40, 20]  # IoU with A = 800 / 1600 = 0.5 exactly
    cm = confusion_matrix(GT, [result(1, half, CAT, 0.3)], iou_thr=0.5, score_thr=0.3)
    assert cm.counts[CAT, CAT] == 1
    stricter = confusion_matrix(GT, [result(1, half, CAT, 0.3)], iou_thr=0.51, score_thr=0.3)
    assert stricter.counts[CAT, CAT] == 0 and stricter.counts[BG, CAT] == 1
    higher = confusion_matrix(GT, [result(1, half, CAT, 0.3)], score_thr=0.31)
    assert higher.counts[BG].sum() == 0 and higher.counts[CAT, BG] == 2  # A and C missed


def test_a_detection_takes_the_open_gt_it_overlaps_most():
    left, right = [0, 0, 40, 40], [10, 0, 50, 40]  # two cats
    gt = ground_truth([[(left, CAT, 0), (right, CAT, 0)]])
    dets = [result(1, [8, 0, 48, 40], CAT, 0.9),  # IoU 1520/1680 with right, 1280/1920 left
            result(1, [0, 0, 30, 40], CAT, 0.8)]  # IoU 0.75 with left, 0.4 with right
    # had the first taken left (its first candidate), the second would find nothing open
    cm = confusion_matrix(gt, dets)
    assert cm.counts[CAT, CAT] == 2 and cm.counts[:, BG].sum() == 0


def test_no_detections_leaves_every_gt_missed():
    cm = confusion_matrix(GT, [])
    np.testing.assert_array_equal(cm.counts[:, BG], [2, 2, 0])
    assert cm.counts[:, :BG].sum() == 0


def test_rows_count_the_gt_and_columns_the_kept_detections():
    rng = np.random.default_rng(0)
    images, results = [], []
    for i in range(1, 21):
        xy = rng.uniform(0, 60, (6, 2))
        wh = rng.uniform(10, 40, (6, 2))
        boxes = np.concatenate([xy, xy + wh], axis=1).round(1).tolist()
        images.append([(b, int(rng.integers(2)), 0) for b in boxes[:4]] + [(boxes[4], CAT, 1)])
        for _ in range(8):
            base = np.array(boxes[int(rng.integers(6))])
            box = (base + rng.normal(0, 4, 4)).tolist()
            results.append(result(i, box, int(rng.integers(2)), float(rng.uniform())))
    gt = ground_truth(images)
    cm = confusion_matrix(gt, results, score_thr=0.3)
    gt_per_class = [sum(1 for rows in images for _, lab, crowd in rows if lab == k and not crowd)
                    for k in (CAT, DOG)]
    np.testing.assert_array_equal(cm.counts[:BG].sum(axis=1), gt_per_class)
    kept = sum(r["score"] >= 0.3 for r in results)
    left_out = kept - cm.counts[:, :BG].sum()  # on a crowd region
    assert 0 <= left_out <= kept
    assert cm.counts[BG, BG] == 0


def test_unknown_ids_and_thresholds_are_named():
    with pytest.raises(DataError, match=r"category id\(s\) \[7\]"):
        confusion_matrix(GT, [{"image_id": 1, "category_id": 7, "bbox": A, "score": 1.0}])
    with pytest.raises(DataError, match=r"image id\(s\) \[99\]"):
        confusion_matrix(GT, [result(99, A, CAT, 1.0)])
    with pytest.raises(ConfigError, match="IoU threshold"):
        confusion_matrix(GT, RESULTS, iou_thr=0.0)
