"""COCO mask evaluation (metric "segm"): pycocotools' own numbers on the same RLE detections,
hand-worked mask IoU cases, GT masks from COCO files and YOLO polygons, and the errors.

Images are 100 x 100. Masks are axis-aligned rectangles of pixels, so every mask IoU is a
count of pixels: a GT of 10 x 10 pixels and a detection of 8 x 8 pixels inside it have mask
IoU 64 / 100 = 0.64, matched at the thresholds 0.50, 0.55, 0.60 of COCO's ten and not from
0.65 on: AP = 3/10, AP50 = 1, AP75 = 0, whatever the detection's box says.
"""

from __future__ import annotations

import contextlib
import io
import json

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detcli.data.datasets import CocoDataset, YOLODataset
from detcli.data.masks_io import NoMasks
from detcli.errors import ConfigError, DataError
from detcli.evaluation.coco import CocoEvaluator, metric_keys
from detcli.evaluation.config import EvaluationConfig
from detcli.evaluation.evaluator import build_evaluator
from detcli.structures.detections import Detections
from detcli.structures.mask_rle import MaskRLE, decode_masks, encode_masks

SIZE = 100
CAT, DOG = 0, 1


def rect_mask(x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    """(SIZE, SIZE) bool: pixels x1 <= x < x2, y1 <= y < y2."""
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[y1:y2, x1:x2] = True
    return mask


def rect_polygon(x1: float, y1: float, x2: float, y2: float) -> list[list[float]]:
    return [[x1, y1, x2, y1, x2, y2, x1, y2]]


class MaskListDataset:
    """The dataset interface evaluation reads, with masks: GT rectangles as polygons."""

    CLASSES = ("cat", "dog")
    source = "hand-built"
    has_masks = True

    def __init__(self, gts: list[list[tuple[list[int], int]]], masks: bool = True) -> None:
        self.gts = gts  # per image: (box x1 y1 x2 y2, label); the mask is the box's pixels
        self.masks = masks
        self.img_infos = [{"id": 1 + i, "file_name": f"{i}.jpg", "height": SIZE, "width": SIZE}
                          for i in range(len(gts))]

    def get_ann_info(self, i: int) -> dict[str, np.ndarray]:
        return {"bboxes": np.array([b for b, _ in self.gts[i]], np.float32).reshape(-1, 4),
                "labels": np.array([lab for _, lab in self.gts[i]], np.int64),
                "bboxes_ignore": np.zeros((0, 4), np.float32)}

    def get_ignore_labels(self, i: int) -> np.ndarray:
        return np.zeros(0, np.int64)

    def get_ann_masks(self, i: int):
        if not self.masks:
            return NoMasks("MaskListDataset hand-built has no instance masks")
        return [rect_polygon(*b) for b, _ in self.gts[i]]

    def get_ann_names(self, i: int) -> list[str]:
        return [f"annotation {k}" for k in range(len(self.gts[i]))]

    def ann_source(self, i: int) -> str:
        return f"image{i}.txt"


def mask_dets(*rows: tuple[list[float], np.ndarray, float, int]) -> Detections:
    """Detections from (box, (H, W) mask, score, label) rows, masks as bitmaps."""
    return Detections(torch.tensor([r[0] for r in rows], dtype=torch.float32).reshape(-1, 4),
                      torch.tensor([r[2] for r in rows], dtype=torch.float32),
                      torch.tensor([r[3] for r in rows], dtype=torch.long),
                      masks=torch.from_numpy(np.stack([r[1] for r in rows])))


def pycocotools_segm_stats(dataset: MaskListDataset, detections: list[Detections]) -> np.ndarray:
    """COCOeval("segm")'s 12 stats from hand-written COCO dicts: GT polygons, area = box area
    (MMDetection's in-memory GT), results with pycocotools-encoded masks and no bbox."""
    images, anns, results = [], [], []
    for i, info in enumerate(dataset.img_infos):
        images.append({"id": info["id"], "height": SIZE, "width": SIZE})
        for box, label in dataset.gts[i]:
            w, h = box[2] - box[0], box[3] - box[1]
            anns.append({"id": len(anns) + 1, "image_id": info["id"], "category_id": label + 1,
                         "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0,
                         "segmentation": rect_polygon(*box)})
        d = detections[i]
        for k in range(len(d)):
            rle = mask_utils.encode(np.asfortranarray(d.masks[k].numpy().astype(np.uint8)))
            results.append({"image_id": info["id"], "category_id": int(d.labels[k]) + 1,
                            "score": float(d.scores[k]),
                            "segmentation": {"size": rle["size"],
                                             "counts": rle["counts"].decode()}})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns,
                  "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        coco_eval = COCOeval(gt, gt.loadRes(results), "segm")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats


def segm_metrics(dataset, detections) -> dict:
    return CocoEvaluator(dataset, iou_type="segm").evaluate(detections)


# --- RLE -----------------------------------------------------------------------------------

def test_encode_masks_is_pycocotools_rle_of_fortran_uint8_and_decodes_back():
    masks = np.stack([rect_mask(2, 3, 7, 9), rect_mask(0, 0, 1, 1), rect_mask(0, 0, 0, 0)])
    rles = encode_masks(torch.from_numpy(masks))
    for mask, rle in zip(masks, rles):
        expected = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert rle == MaskRLE(SIZE, SIZE, expected["counts"].decode("ascii"))
        assert json.loads(json.dumps(rle.to_coco())) == {"size": [SIZE, SIZE],
                                                         "counts": rle.counts}
    assert [r.area for r in rles] == [30, 1, 0]
    np.testing.assert_array_equal(decode_masks(rles, SIZE, SIZE), masks)
    assert MaskRLE.from_coco({"size": [SIZE, SIZE], "counts": rles[0].counts.encode()}) == rles[0]


def test_with_encoded_masks_drops_the_bitmaps_and_select_keeps_masks_aligned():
    d = mask_dets(([0, 0, 10, 10], rect_mask(0, 0, 10, 10), 0.9, CAT),
                  ([5, 5, 20, 20], rect_mask(5, 5, 20, 20), 0.2, DOG))
    light = d.with_encoded_masks()
    assert light.masks is None and light.has_masks and [r.area for r in light.mask_rles] == [100, 225]
    kept = light.select(light.scores > 0.5)
    assert len(kept) == 1 and [r.area for r in kept.mask_rles] == [100]
    assert d.select(torch.tensor([1])).masks.sum() == 225


# --- hand-worked mask IoU -------------------------------------------------------------------

def test_a_mask_of_iou_064_counts_at_050_not_at_075_whatever_its_box():
    ds = MaskListDataset([[([20, 20, 30, 30], CAT)]])
    inner = rect_mask(21, 21, 29, 29)  # 8 x 8 = 64 pixels inside the 10 x 10 GT
    found = [mask_dets(([20, 20, 30, 30], inner, 0.9, CAT))]  # the box is the GT's exactly
    segm = segm_metrics(ds, found)
    assert segm["segm_mAP_50"] == pytest.approx(1.0)
    assert segm["segm_mAP_75"] == pytest.approx(0.0)
    assert segm["segm_mAP"] == pytest.approx(0.3)  # 0.50, 0.55, 0.60 of ten thresholds
    assert segm["per_class"][CAT]["segm_AP50"] == pytest.approx(1.0)
    assert segm["per_class"][DOG]["segm_AP"] is None  # no dog GT
    bbox = CocoEvaluator(ds).evaluate(found)
    assert bbox["bbox_mAP"] == pytest.approx(1.0)  # the same detections' boxes are perfect


def test_small_medium_large_are_the_masks_areas_not_the_boxes():
    # One small GT (20 x 20 = 400 < 32^2), found exactly at score 0.5; above it a false
    # positive whose mask is small too (400 pixels elsewhere) but whose box is 70 x 70 (4900:
    # medium). With the bbox dropped pycocotools takes the mask's area: the FP counts in the
    # small range and AP_s = 0.5 (precision 1/2 at recall 1). Scored by its box's area it
    # would be a medium detection, ignored in the small range: AP_s = 1.
    ds = MaskListDataset([[([10, 10, 30, 30], CAT)]])
    found = [mask_dets(([20, 20, 90, 90], rect_mask(60, 60, 80, 80), 0.9, CAT),
                       ([10, 10, 30, 30], rect_mask(10, 10, 30, 30), 0.5, CAT))]
    segm = segm_metrics(ds, found)
    assert segm["segm_mAP_s"] == pytest.approx(0.5) and segm["segm_mAP_m"] == -1.0
    assert segm["segm_AR_s@100"] == pytest.approx(1.0)


def test_segm_metrics_equal_pycocotools_on_the_same_rle_detections():
    ds = MaskListDataset([
        [([10, 10, 50, 50], CAT), ([60, 60, 90, 95], DOG)],
        [([0, 0, 12, 12], CAT)],
        [],
        [([30, 30, 80, 80], DOG), ([5, 5, 25, 15], CAT)],
    ])
    found = [
        mask_dets(([10, 10, 50, 50], rect_mask(12, 10, 50, 48), 0.95, CAT),  # IoU 0.9
                  ([60, 60, 90, 95], rect_mask(60, 70, 90, 95), 0.6, DOG),  # IoU 25/35
                  ([0, 0, 99, 99], rect_mask(40, 40, 99, 99), 0.7, CAT)),  # a FP above a TP
        mask_dets(([0, 0, 12, 12], rect_mask(0, 0, 6, 12), 0.8, CAT),  # IoU 0.5
                  ([0, 0, 12, 12], rect_mask(0, 0, 12, 12), 0.3, DOG)),  # wrong class
        mask_dets(([0, 0, 5, 5], rect_mask(0, 0, 5, 5), 0.4, DOG)),  # FP on an empty image
        mask_dets(([30, 30, 80, 80], rect_mask(35, 30, 80, 80), 0.85, DOG),  # cat missed
                  ([0, 0, 99, 60], rect_mask(70, 80, 80, 90), 0.9, CAT)),  # big box, small mask
    ]
    metrics = segm_metrics(ds, found)
    expected = pycocotools_segm_stats(ds, found)
    np.testing.assert_allclose([metrics[k] for k in metric_keys("segm")], expected, atol=1e-12)
    assert 0 < metrics["segm_mAP"] < metrics["segm_mAP_50"] <= 1
    # RLE detections (as the tester keeps them) score the same as bitmaps
    light = [d.with_encoded_masks() for d in found]
    assert segm_metrics(ds, light) == metrics


def test_results_carry_the_rle_whatever_the_metric_and_bbox_plus_segm_report_both():
    ds = MaskListDataset([[([20, 20, 30, 30], CAT)]])
    found = [mask_dets(([20, 20, 30, 30], rect_mask(21, 21, 29, 29), 0.9, CAT))]
    evaluator = build_evaluator(EvaluationConfig(metric=["bbox", "segm"]), ds)
    results = evaluator.results(found)
    assert set(results[0]) == {"image_id", "category_id", "bbox", "score", "segmentation"}
    segm = results[0]["segmentation"]
    rle = mask_utils.encode(np.asfortranarray(rect_mask(21, 21, 29, 29).astype(np.uint8)))
    assert segm == {"size": [SIZE, SIZE], "counts": rle["counts"].decode()}
    metrics = evaluator.evaluate(found)
    assert metrics["bbox_mAP"] == pytest.approx(1.0) and metrics["segm_mAP"] == pytest.approx(0.3)
    cat = metrics["per_class"][CAT]
    assert cat["AP"] == pytest.approx(1.0) and cat["segm_AP"] == pytest.approx(0.3)
    assert EvaluationConfig(metric=["segm", "bbox"]).primary_key == "segm_mAP"


# --- GT masks from datasets ----------------------------------------------------------------

def test_a_coco_dataset_is_scored_against_its_own_segmentations(tmp_path):
    data = {"images": [{"id": 7, "file_name": "a.jpg", "height": SIZE, "width": SIZE}],
            "categories": [{"id": 3, "name": "cat"}],
            "annotations": [
                {"id": 1, "image_id": 7, "category_id": 3, "bbox": [20, 20, 10, 10],
                 "area": 100.0, "iscrowd": 0, "segmentation": rect_polygon(20, 20, 30, 30)},
                {"id": 2, "image_id": 7, "category_id": 3, "bbox": [60, 60, 20, 20], "area": 400.0,
                 "iscrowd": 0,
                 "segmentation": {"size": [SIZE, SIZE], "counts": mask_utils.encode(
                     np.asfortranarray(rect_mask(60, 60, 80, 80).astype(np.uint8)))["counts"]
                     .decode()}}]}
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(data))
    ds = CocoDataset(ann_file=str(ann), img_prefix=str(tmp_path), pipeline=[], test_mode=True)
    found = [mask_dets(([20, 20, 30, 30], rect_mask(21, 21, 29, 29), 0.9, 0),
                       ([60, 60, 80, 80], rect_mask(60, 60, 80, 80), 0.8, 0))]
    metrics = segm_metrics(ds, found)
    # one perfect (both thresholds) and one at IoU 0.64: recall 1 at 0.50..0.60, 0.5 above
    assert metrics["segm_mAP_50"] == pytest.approx(1.0)
    assert metrics["segm_AR@100"] == pytest.approx((3 * 1.0 + 7 * 0.5) / 10)
    results = CocoEvaluator(ds, iou_type="segm").results(found)
    assert {r["category_id"] for r in results} == {3}

    data["annotations"][1].pop("segmentation")
    ann.write_text(json.dumps(data))
    ds = CocoDataset(ann_file=str(ann), img_prefix=str(tmp_path), pipeline=[], test_mode=True)
    with pytest.raises(DataError, match=r"1 annotation\(s\) have no `segmentation` \(ids \[2\]\)"):
        CocoEvaluator(ds, iou_type="segm")
    CocoEvaluator(ds)  # boxes alone need no masks


def test_a_yolo_dataset_with_polygon_labels_gets_in_memory_gt_masks(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    cv2.imwrite(str(images / "a.png"), np.zeros((SIZE, SIZE, 3), np.uint8))
    # a 10 x 10 square at (20, 20) as a normalised polygon
    (labels / "a.txt").write_text("0 0.2 0.2 0.3 0.2 0.3 0.3 0.2 0.3\n")
    ds = YOLODataset(img_prefix=str(images), classes=["cat"], filter_empty_gt=False)
    found = [mask_dets(([20, 20, 30, 30], rect_mask(21, 21, 29, 29), 0.9, 0))]
    metrics = segm_metrics(ds, found)
    assert metrics["segm_mAP_50"] == pytest.approx(1.0) and metrics["segm_mAP"] == pytest.approx(0.3)

    (labels / "a.txt").write_text("0 0.25 0.25 0.1 0.1\n")  # a box line: no mask
    ds = YOLODataset(img_prefix=str(images), classes=["cat"], filter_empty_gt=False)
    with pytest.raises(DataError, match=r"a.txt: line 1 is a box line"):
        CocoEvaluator(ds, iou_type="segm")


def test_asking_segm_of_a_dataset_without_masks_is_a_config_error_naming_it():
    ds = MaskListDataset([[([20, 20, 30, 30], CAT)]], masks=False)
    with pytest.raises(ConfigError, match="needs GT instance masks, but MaskListDataset "
                                          "hand-built has no instance masks"):
        build_evaluator(EvaluationConfig(metric=["bbox", "segm"]), ds)


def test_segm_of_a_box_only_detector_is_a_config_error():
    ds = MaskListDataset([[([20, 20, 30, 30], CAT)]])
    boxes_only = [Detections(torch.tensor([[20.0, 20, 30, 30]]), torch.tensor([0.9]),
                             torch.tensor([CAT]))]
    with pytest.raises(ConfigError, match="scores masks, but the detections have none"):
        segm_metrics(ds, boxes_only)
    empty = [Detections(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long))]
    assert segm_metrics(ds, empty)["segm_mAP"] == 0.0  # nothing detected is a score, not an error


def test_the_faster_coco_eval_backend_gives_the_same_segm_numbers():
    pytest.importorskip("faster_coco_eval")
    ds = MaskListDataset([[([10, 10, 50, 50], CAT), ([60, 60, 90, 95], DOG)], [([0, 0, 12, 12], CAT)]])
    found = [mask_dets(([10, 10, 50, 50], rect_mask(12, 10, 50, 48), 0.95, CAT),
                       ([0, 0, 99, 99], rect_mask(40, 40, 99, 99), 0.7, CAT)),
             mask_dets(([0, 0, 12, 12], rect_mask(0, 0, 6, 12), 0.8, CAT))]
    fast = CocoEvaluator(ds, backend="faster-coco-eval", iou_type="segm").evaluate(found)
    plain = segm_metrics(ds, found)
    for key in metric_keys("segm"):
        assert fast[key] == pytest.approx(plain[key], abs=1e-9), key


def test_masks_that_are_exactly_their_integer_boxes_score_as_the_boxes_do():
    # mask IoU = box IoU for pixel-aligned rectangles, and both areas are the box's: all twelve
    # segm numbers equal the bbox ones (random scenes, FPs, misses, both classes)
    rng = np.random.default_rng(3)
    gts, found = [], []
    for _ in range(6):
        gt = []
        for _ in range(int(rng.integers(1, 4))):
            x, y = (int(v) for v in rng.integers(0, 60, 2))
            w, h = (int(v) for v in rng.integers(5, 40, 2))
            gt.append(([x, y, x + w, y + h], int(rng.integers(0, 2))))
        gts.append(gt)
        rows = []
        for k in range(5):
            base = gt[k][0] if k < len(gt) else [*(int(v) for v in rng.integers(0, 60, 2)), 0, 0]
            x1, y1 = np.clip(np.array(base[:2]) + rng.integers(-4, 5, 2), 0, SIZE - 10)
            x2 = int(np.clip(max(base[2], x1) + rng.integers(-4, 5), x1 + 3, SIZE))
            y2 = int(np.clip(max(base[3], y1) + rng.integers(-4, 5), y1 + 3, SIZE))
            box = [int(x1), int(y1), x2, y2]
            rows.append((box, rect_mask(*box), float(rng.random()),
                         int(rng.integers(0, 2))))
        found.append(mask_dets(*rows))
    ds = MaskListDataset(gts)
    segm, bbox = segm_metrics(ds, found), CocoEvaluator(ds).evaluate(found)
    assert 0 < bbox["bbox_mAP"] < 1
    for s_key, b_key in zip(metric_keys("segm"), metric_keys("bbox")):
        assert segm[s_key] == pytest.approx(bbox[b_key], abs=1e-12), s_key
