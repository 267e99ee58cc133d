"""Write tests/fixtures/voc_map.json: MMDetection 3.3's ``eval_map`` on random VOC-style data.

Run with the MMDetection reference install and its mmcv shim (../shared/mmdet_reference):

    /work/mmref/bin/python tools/voc_map_fixture.py

The data (GT boxes, ignore boxes with their labels, scored detections) is stored in the JSON,
so the test reads it from there and never needs MMDetection. Detections: jittered copies of GT
boxes (some IoUs below and above each threshold), duplicates, detections of the wrong class,
some on ignore boxes, and background boxes; scores are continuous (no ties, where MMDetection's
unstable sort would make the order arbitrary).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared" / "mmdet_reference"))
import mmcv_ext_shim  # noqa: E402  (serves mmcv._ext, which mmdet's imports need)

mmcv_ext_shim.install()
from mmdet.evaluation.functional import eval_map  # noqa: E402

NUM_CLASSES, NUM_IMAGES, SIZE = 3, 40, 200
OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "voc_map.json"


def random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 4) integer-cornered boxes 3..60 pixels wide inside the image (the small ones make
    the legacy + 1 matter)."""
    wh = rng.integers(3, 60, size=(n, 2))
    xy = rng.integers(0, SIZE - 60, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float64)


def jitter(rng: np.random.Generator, box: np.ndarray) -> np.ndarray:
    """Shift each corner by up to 3%, 10% or 25% of the box size (one drawn per detection):
    IoUs from about 0.4 to 1."""
    size = np.concatenate([box[2:] - box[:2]] * 2)
    spread = rng.choice([0.03, 0.1, 0.25])
    return np.round(box + rng.uniform(-spread, spread, size=4) * size, 1)


def make_image(rng: np.random.Generator) -> dict:
    labels = rng.integers(0, NUM_CLASSES, size=rng.integers(0, 6))
    gt = random_boxes(rng, len(labels))
    ignore_labels = rng.integers(0, NUM_CLASSES, size=rng.integers(0, 2) if rng.random() < 0.4 else 0)
    ignore = random_boxes(rng, len(ignore_labels))
    det_boxes, det_labels = [], []
    for box, label in zip(np.concatenate([gt, ignore]), np.concatenate([labels, ignore_labels])):
        for _ in range(rng.choice([0, 1, 1, 1, 2])):  # missed, found, found twice
            det_boxes.append(jitter(rng, box))
            det_labels.append(label if rng.random() < 0.85 else rng.integers(0, NUM_CLASSES))
    n_bg = rng.integers(0, 4)
    det_boxes += list(random_boxes(rng, n_bg))
    det_labels += list(rng.integers(0, NUM_CLASSES, size=n_bg))
    scores = rng.uniform(0.05, 1.0, size=len(det_boxes))
    return {"gt_boxes": gt.tolist(), "gt_labels": labels.tolist(),
            "ignore_boxes": ignore.tolist(), "ignore_labels": ignore_labels.tolist(),
            "det_boxes": np.asarray(det_boxes).reshape(-1, 4).tolist(),
            "det_scores": scores.tolist(), "det_labels": [int(v) for v in det_labels]}


def mmdet_inputs(images: list[dict]) -> tuple[list, list]:
    dets, anns = [], []
    for im in images:
        boxes = np.asarray(im["det_boxes"], dtype=np.float32).reshape(-1, 4)
        scores = np.asarray(im["det_scores"], dtype=np.float32)
        labels = np.asarray(im["det_labels"])
        dets.append([np.hstack([boxes[labels == k], scores[labels == k, None]])
                     for k in range(NUM_CLASSES)])
        anns.append({"bboxes": np.asarray(im["gt_boxes"], dtype=np.float32).reshape(-1, 4),
                     "labels": np.asarray(im["gt_labels"], dtype=np.int64),
                     "bboxes_ignore": np.asarray(im["ignore_boxes"], dtype=np.float32).reshape(-1, 4),
                     "labels_ignore": np.asarray(im["ignore_labels"], dtype=np.int64)})
    return dets, anns


def main() -> None:
    rng = np.random.default_rng(18)
    images = [make_image(rng) for _ in range(NUM_IMAGES)]
    dets, anns = mmdet_inputs(images)
    runs = []
    for legacy in (True, False):
        for iou_thr in (0.5, 0.75):
            for mode in ("11points", "area"):
                mean_ap, per_class = eval_map(dets, anns, iou_thr=iou_thr, eval_mode=mode,
                                              use_legacy_coordinate=legacy, logger="silent",
                                              nproc=1)
                runs.append({"use_legacy_coordinate": legacy, "iou_thr": iou_thr,
                             "eval_mode": mode, "mAP": float(mean_ap),
                             "num_gts": [int(c["num_gts"]) for c in per_class],
                             "num_dets": [int(c["num_dets"]) for c in per_class],
                             "recall": [float(c["recall"][-1]) if c["recall"].size else 0.0
                                        for c in per_class],
                             "ap": [float(c["ap"]) for c in per_class]})
    OUT.write_text(json.dumps({"generator": "mmdet.evaluation.functional.eval_map (MMDetection "
                               "3.3.0)", "num_classes": NUM_CLASSES, "images": images,
                               "runs": runs}, indent=None) + "\n", encoding="utf-8")
    print(f"wrote {OUT}: {sum(len(i['det_boxes']) for i in images)} detections, "
          f"{sum(len(i['gt_boxes']) for i in images)} GT boxes")


if __name__ == "__main__":
    main()
