"""VocEvaluator: VOC mAP worked by hand, MMDetection's eval_map on a fixture, pycocotools' AP50.

The worked example (one class, ``use_legacy_coordinate = false``, IoU 0.5). Image 0 has GT
A = [0, 0, 10, 10] and B = [20, 0, 30, 10], image 1 has GT C = [0, 0, 10, 10]: 3 GT. Five
detections, by score:

======  =====  ==================  ==============================  ======  =========
score   image  box                 outcome                         recall  precision
======  =====  ==================  ==============================  ======  =========
0.9     0      [0, 0, 10, 10]      TP (A)                          1/3     1
0.8     0      [1, 0, 11, 10]      FP: its best GT, A, is taken    1/3     1/2
0.7     1      [0, 0, 10, 10]      TP (C)                          2/3     2/3
0.6     1      [50, 50, 60, 60]    FP: no GT                       2/3     1/2
0.5     0      [20, 0, 30, 10]     TP (B)                          1       3/5
======  =====  ==================  ==============================  ======  =========

11 points: the best precision at recall >= t is 1 for t = 0, .1, .2, .3 (4 points), 2/3 for
t = .4, .5, .6 (3 points), 3/5 for t = .7, .8, .9, 1 (4 points): AP = (4 + 2 + 2.4) / 11 =
42/55. Area: the envelope is 1 on (0, 1/3], 2/3 on (1/3, 2/3], 3/5 on (2/3, 1]:
AP = 1/3 + 2/9 + 1/5 = 34/45. pycocotools' AP50 samples the same envelope at the 101 recall
points 0, .01, ..., 1: 34 points at 1 (0 to .33), 33 at 2/3, 34 at 3/5: 76.4/101.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from detcli.errors import ConfigError, DetError
from detcli.evaluation.coco import CocoEvaluator
from detcli.evaluation.voc import VocEvaluator, average_precision, box_iou
from detcli.structures.detections import Detections
from tests.evaluation.test_coco import CAT, DOG, ListDataset, dets

FIXTURE = Path(__file__).parents[1] / "fixtures" / "voc_map.json"  # tools/voc_map_fixture.py

WORKED_GT = [([[0, 0, 10, 10], [20, 0, 30, 10]], [CAT, CAT]), ([[0, 0, 10, 10]], [CAT])]
WORKED_DETS = [dets(([0, 0, 10, 10], 0.9, CAT), ([1, 0, 11, 10], 0.8, CAT), ([20, 0, 30, 10], 0.5, CAT)),
               dets(([0, 0, 10, 10], 0.7, CAT), ([50, 50, 60, 60], 0.6, CAT))]


def voc(dataset, detections, **kwargs) -> dict:
    kwargs.setdefault("use_legacy_coordinate", False)
    return VocEvaluator(dataset, **kwargs).evaluate(detections)


def per_class(metrics: dict, key: str = "voc_AP") -> dict:
    return {entry["class"]: entry[key] for entry in metrics["per_class"]}


def test_worked_example_11_points_and_area():
    ds = ListDataset(WORKED_GT)
    ranked = VocEvaluator(ds, use_legacy_coordinate=False).rank(WORKED_DETS)[0][CAT]
    np.testing.assert_allclose(ranked.recall, [1 / 3, 1 / 3, 2 / 3, 2 / 3, 1])
    np.testing.assert_allclose(ranked.precision, [1, 1 / 2, 2 / 3, 1 / 2, 3 / 5])
    metrics = voc(ds, WORKED_DETS, eval_mode="11points")
    assert metrics["voc_mAP"] == pytest.approx(42 / 55, abs=1e-12)
    assert metrics["voc_mAP_11points"] == pytest.approx(42 / 55, abs=1e-12)
    assert metrics["voc_mAP_area"] == pytest.approx(34 / 45, abs=1e-12)
    assert metrics["voc_AP50"] == metrics["voc_mAP"]  # one threshold
    assert metrics["per_class"] == [
        {"class": "cat", "voc_num_gts": 3, "voc_num_dets": 5, "voc_recall": 1.0,
         "voc_AP": pytest.approx(42 / 55)},
        {"class": "dog", "voc_num_gts": 0, "voc_num_dets": 0, "voc_recall": None, "voc_AP": None}]
    assert voc(ds, WORKED_DETS, eval_mode="area")["voc_mAP"] == pytest.approx(34 / 45, abs=1e-12)


def test_worked_example_against_pycocotools_ap50():
    """Same matches, same envelope: COCO's 101-point sampling gives 76.4/101 = 0.75644 where the
    area is 34/45 = 0.75556 (not equal; within the 1/100 bound of the next test)."""
    ds = ListDataset(WORKED_GT)
    coco = CocoEvaluator(ds).evaluate(WORKED_DETS)
    assert coco["bbox_mAP_50"] == pytest.approx(76.4 / 101, abs=1e-12)
    assert voc(ds, WORKED_DETS, eval_mode="area")["voc_mAP"] != pytest.approx(coco["bbox_mAP_50"])


def test_average_precision_by_hand():
    recall, precision = np.array([0.5, 1.0]), np.array([1.0, 0.5])
    assert average_precision(recall, precision, "area") == pytest.approx(0.75)
    assert average_precision(recall, precision, "11points") == pytest.approx((6 + 5 * 0.5) / 11)
    # never reaching recall 0.6: the 11 points above it are 0, the area stops at 0.5
    assert average_precision(np.array([0.5]), np.array([1.0]), "11points") == pytest.approx(6 / 11)
    assert average_precision(np.array([0.5]), np.array([1.0]), "area") == pytest.approx(0.5)
    assert average_precision(np.zeros(0), np.zeros(0), "area") == 0.0
    with pytest.raises(ConfigError, match="'points'"):
        average_precision(recall, precision, "points")


def test_a_duplicate_is_a_false_positive_even_next_to_a_free_gt():
    """GT A = [0, 0, 10, 10] and B = [4, 0, 14, 10]; the second detection [1, 0, 11, 10] has
    IoU 90/110 with A (taken) and 70/130 = 0.54 with B (free): VOC pairs it with A, a FP, so
    recall stops at 1/2 (AP 0.5); COCO gives it B (AP 1)."""
    ds = ListDataset([([[0, 0, 10, 10], [4, 0, 14, 10]], [CAT, CAT])])
    found = [dets(([0, 0, 10, 10], 0.9, CAT), ([1, 0, 11, 10], 0.8, CAT))]
    metrics = voc(ds, found, eval_mode="area")
    assert metrics["voc_mAP"] == pytest.approx(0.5)
    assert per_class(metrics, "voc_recall")["cat"] == 0.5
    assert CocoEvaluator(ds).evaluate(found)["bbox_mAP_50"] == pytest.approx(1.0)


def test_difficult_gt_is_ignored_for_its_class_only():
    # a difficult (ignore) cat at [60, 60, 100, 100]: the 0.95 cat on it is neither TP nor FP
    # and the difficult box is not counted in num_gts; a dog on it is a FP
    ds = ListDataset([([[10, 10, 50, 50]], [CAT])], ignores=[([[60, 60, 100, 100]], [CAT])])
    found = [dets(([61, 61, 99, 99], 0.95, CAT), ([10, 10, 50, 50], 0.9, CAT), ([60, 60, 100, 100], 0.97, DOG))]
    metrics = voc(ds, found, eval_mode="area")
    assert metrics["per_class"][CAT] == {"class": "cat", "voc_num_gts": 1, "voc_num_dets": 2,
                                         "voc_recall": 1.0, "voc_AP": 1.0}
    assert metrics["voc_mAP"] == 1.0  # dog has no GT: its FP does not count in the mean
    # the same box as a difficult dog: the cat on it is now a FP ranked first, AP 1/2
    ds_dog = ListDataset([([[10, 10, 50, 50]], [CAT])], ignores=[([[60, 60, 100, 100]], [DOG])])
    assert voc(ds_dog, found, eval_mode="area")["voc_mAP"] == pytest.approx(0.5)
    # a dataset that cannot tell the ignore box's class: it ignores every class
    ds_any = ListDataset([([[10, 10, 50, 50]], [CAT])], ignores=[([[60, 60, 100, 100]], [DOG])],
                         with_ignore_labels=False)
    assert voc(ds_any, found, eval_mode="area")["voc_mAP"] == 1.0


def test_legacy_coordinate_adds_one_pixel():
    """[0, 0, 9, 9] vs [0, 0, 9, 4]: with + 1 the areas are 100 and 50, the overlap 50, IoU 0.5
    (a TP at 0.5); without, 81 and 36, IoU 36/81 = 0.44 (a FP)."""
    a, b = np.array([[0, 0, 9, 9]]), np.array([[0, 0, 9, 4]])
    assert box_iou(a, b, legacy=True)[0, 0] == pytest.approx(0.5)
    assert box_iou(a, b, legacy=False)[0, 0] == pytest.approx(36 / 81)
    ds = ListDataset([([[0, 0, 9, 9]], [CAT])])
    found = [dets(([0, 0, 9, 4], 0.9, CAT))]
    assert voc(ds, found, use_legacy_coordinate=True)["voc_mAP"] == 1.0
    assert voc(ds, found, use_legacy_coordinate=False)["voc_mAP"] == 0.0


def test_several_iou_thresholds_give_one_key_each_and_their_mean():
    # IoU of the one detection: 36/40 = 0.9 with its GT (TP at 0.5 and 0.75); the other GT's
    # detection has IoU 0.6 (TP at 0.5, FP at 0.75)
    ds = ListDataset([([[0, 0, 10, 4], [20, 0, 30, 10]], [CAT, CAT])])
    found = [dets(([0, 0, 9, 4], 0.9, CAT), ([20, 0, 30, 6], 0.8, CAT))]
    metrics = voc(ds, found, iou_thrs=(0.5, 0.75), eval_mode="area")
    assert metrics["voc_AP50"] == 1.0 and metrics["voc_AP75"] == pytest.approx(0.5)
    assert metrics["voc_mAP"] == pytest.approx(0.75)
    assert per_class(metrics, "voc_recall")["cat"] == pytest.approx((1.0 + 0.5) / 2)


def test_images_without_gt_or_detections_and_classes_without_gt():
    # dog: a TP on image 0, a higher-scoring FP on image 1 (no GT there): precision 1/2 at recall 1
    ds = ListDataset([([[20, 20, 60, 60]], [DOG]), ([], []), ([[0, 0, 10, 10]], [DOG])])
    found = [dets(([20, 20, 60, 60], 0.9, DOG)), dets(([0, 0, 40, 40], 0.95, DOG)), dets()]
    metrics = voc(ds, found, eval_mode="area")
    assert per_class(metrics) == {"cat": None, "dog": pytest.approx(0.5 * 0.5)}  # 1 of 2 GT found
    assert metrics["voc_mAP"] == pytest.approx(0.25)
    nothing = voc(ds, [dets(), dets(), dets()])
    assert nothing["voc_mAP"] == 0.0 and per_class(nothing) == {"cat": None, "dog": 0.0}


def test_no_gt_at_all_is_minus_one_not_a_crash(caplog):
    ds = ListDataset([([], [])])
    assert voc(ds, [dets(([0, 0, 5, 5], 0.5, CAT))])["voc_mAP"] == -1.0
    assert "no GT boxes" in caplog.text


def test_detections_for_another_image_count_are_refused():
    with pytest.raises(DetError, match="detections for 1 images but the dataset has 2"):
        voc(ListDataset(WORKED_GT), [dets()])
    with pytest.raises(ConfigError, match="eval_mode 'voc07'"):
        VocEvaluator(ListDataset(WORKED_GT), eval_mode="voc07")


def test_results_are_the_coco_evaluations():
    ds = ListDataset(WORKED_GT)
    assert VocEvaluator(ds).results(WORKED_DETS) == CocoEvaluator(ds).results(WORKED_DETS)
    assert VocEvaluator(ds).class_names == ["cat", "dog"]


class FixtureDataset:
    """The fixture's images as the dataset interface evaluation reads."""

    def __init__(self, images: list[dict], num_classes: int) -> None:
        self.CLASSES = tuple(f"c{k}" for k in range(num_classes))
        self.images = images
        self.img_infos = [{"id": i, "height": 200, "width": 200} for i in range(len(images))]

    def get_ann_info(self, i: int) -> dict[str, np.ndarray]:
        im = self.images[i]
        return {"bboxes": np.array(im["gt_boxes"], dtype=np.float32).reshape(-1, 4),
                "labels": np.array(im["gt_labels"], dtype=np.int64),
                "bboxes_ignore": np.array(im["ignore_boxes"], dtype=np.float32).reshape(-1, 4)}

    def get_ignore_labels(self, i: int) -> np.ndarray:
        return np.array(self.images[i]["ignore_labels"], dtype=np.int64)

    def detections(self) -> list[Detections]:
        return [Detections(torch.tensor(im["det_boxes"], dtype=torch.float32).reshape(-1, 4),
                           torch.tensor(im["det_scores"], dtype=torch.float32),
                           torch.tensor(im["det_labels"], dtype=torch.long)) for im in self.images]


@pytest.fixture(scope="module")
def fixture() -> dict:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def test_same_numbers_as_mmdetection_eval_map(fixture):
    """MMDetection 3.3 ``eval_map`` (tools/voc_map_fixture.py): 40 images, 3 classes, ignore
    boxes, duplicates, wrong classes; both modes, IoU 0.5 and 0.75, with and without + 1.
    MMDetection keeps AP in float32: 1e-6."""
    ds = FixtureDataset(fixture["images"], fixture["num_classes"])
    found = ds.detections()
    for run in fixture["runs"]:
        metrics = VocEvaluator(ds, iou_thrs=(run["iou_thr"],), eval_mode=run["eval_mode"],
                               use_legacy_coordinate=run["use_legacy_coordinate"]).evaluate(found)
        where = f"{run['eval_mode']}, IoU {run['iou_thr']}, legacy {run['use_legacy_coordinate']}"
        assert metrics["voc_mAP"] == pytest.approx(run["mAP"], abs=1e-6), where
        rows = metrics["per_class"]
        assert [r["voc_num_gts"] for r in rows] == run["num_gts"], where
        assert [r["voc_num_dets"] for r in rows] == run["num_dets"], where
        np.testing.assert_allclose([r["voc_AP"] for r in rows], run["ap"], atol=1e-6, err_msg=where)
        np.testing.assert_allclose([r["voc_recall"] for r in rows], run["recall"], atol=1e-6,
                                   err_msg=where)


def test_area_mode_is_within_one_percent_of_pycocotools_ap50():
    """Where VOC and COCO make the same matches, COCO's AP50 samples the envelope that the area
    mode integrates at 101 points; for a non-increasing envelope q, sum(q(i/100), i=0..100)/101
    lies within 1/100 of its integral. The matches agree here: GT boxes sit in separate cells
    of a grid (no detection reaches IoU 0.5 with two of them), there are no ignore boxes
    (COCO's crowd regions match differently) and at most 100 detections per image."""
    rng = np.random.default_rng(7)
    gts, found = [], []
    for _ in range(30):
        cells = rng.choice(16, size=rng.integers(0, 6), replace=False)
        boxes = [[40 * (c % 4) + 5, 40 * (c // 4) + 5, 40 * (c % 4) + 35, 40 * (c // 4) + 35]
                 for c in cells]
        labels = rng.integers(0, 2, size=len(boxes)).tolist()
        rows = []
        for box, label in zip(boxes, labels):
            for _ in range(rng.choice([0, 1, 1, 2])):
                rows.append((list(np.array(box) + rng.uniform(-6, 6, size=4)), rng.random(), label))
        for _ in range(rng.integers(0, 3)):  # background
            x, y = rng.uniform(0, 130, size=2)
            rows.append(([x, y, x + 25, y + 25], rng.random(), int(rng.integers(0, 2))))
        gts.append((boxes, labels))
        found.append(dets(*rows))
    ds = ListDataset(gts)
    coco = CocoEvaluator(ds).evaluate(found)
    metrics = voc(ds, found, eval_mode="area")
    coco_ap50 = {"cat": None, "dog": None}
    scores = CocoEvaluator(ds).score_results(CocoEvaluator(ds).results(found))
    for row in scores.per_class:
        coco_ap50[row.name] = row.ap50
    for name, ap in per_class(metrics).items():
        assert abs(ap - coco_ap50[name]) <= 0.01, name
    assert abs(metrics["voc_mAP"] - coco["bbox_mAP_50"]) <= 0.01
    assert metrics["voc_mAP"] != coco["bbox_mAP_50"]  # close, not the same number
