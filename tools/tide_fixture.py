"""Write tests/fixtures/tide_errors.json: TIDE's own error breakdown of random scenes.

TIDE (tidecv 1.0.1, Bolya et al. 2020) is not a dependency of det; install it beside the
project's environment, without touching it, and run this with the project's python:

    python -m pip install --target /tmp/tide --no-deps tidecv==1.0.1 appdirs
    python -m pip install --target /tmp/tide-deps pandas seaborn
    PYTHONPATH=/tmp/tide:/tmp/tide-deps .venv/bin/python tools/tide_fixture.py

The scenes (GT boxes, crowd regions, scored detections, in COCO form) are stored in the JSON
with TIDE's numbers, so tests/evaluation/test_errors.py reads them and never needs TIDE. The
detections are jittered copies of GT boxes (IoU below and above 0.5 and 0.1), duplicates,
copies with the wrong class and background boxes; scores are continuous. Every class has GT and
no image has 100 detections, so TIDE's AP (its own 101-point COCO-style AP; a class without GT
would score 0 there) and COCO's are the same definition. There are no crowd regions: tidecv
1.0.1 gives a detection it ignores on a crowd region an error type too (mostly background) and
counts it as a false positive in the other types' fixed runs, where det follows COCO (neither
TP nor FP, no error); test_errors.py checks det's crowd rule on a hand-built image.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tidecv import TIDE, Data

NUM_CLASSES, NUM_IMAGES, SIZE = 3, 30, 200
SEEDS = (0, 1)
OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tide_errors.json"
SHORT = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss")


def random_box(rng: np.random.Generator) -> list[float]:
    """x, y, w, h inside the image, 8..70 pixels a side."""
    w, h = rng.uniform(8, 70, 2)
    x, y = rng.uniform(0, SIZE - 70, 2)
    return [round(float(v), 2) for v in (x, y, w, h)]


def jitter(rng: np.random.Generator, box: list[float], scale: float) -> list[float]:
    x, y, w, h = box
    dx, dy = rng.normal(0, scale * w), rng.normal(0, scale * h)
    dw, dh = np.exp(rng.normal(0, scale, 2))
    return [round(float(v), 2) for v in (x + dx, y + dy, max(w * dw, 1.0), max(h * dh, 1.0))]


def scene(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    images, annotations, results = [], [], []
    for image_id in range(1, NUM_IMAGES + 1):
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "height": SIZE,
                       "width": SIZE})
        boxes = [(random_box(rng), int(rng.integers(NUM_CLASSES))) for _ in
                 range(int(rng.integers(1, 6)))]
        if image_id <= NUM_CLASSES:  # every class has GT
            boxes[0] = (boxes[0][0], image_id - 1)
        for box, label in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": label + 1, "bbox": box,
                                "area": box[2] * box[3], "iscrowd": 0})
            for _ in range(int(rng.integers(0, 4))):  # found, loosely, twice, as another class
                scale = float(rng.choice([0.03, 0.15, 0.4]))
                wrong = rng.uniform() < 0.2
                cat = int(rng.integers(NUM_CLASSES)) if wrong else label
                results.append({"image_id": image_id, "category_id": cat + 1,
                                "bbox": jitter(rng, box, scale), "score": float(rng.uniform())})
        for _ in range(int(rng.integers(0, 3))):  # background
            results.append({"image_id": image_id, "category_id": int(rng.integers(NUM_CLASSES)) + 1,
                            "bbox": random_box(rng), "score": float(rng.uniform())})
    return {"seed": seed, "images": images, "annotations": annotations, "results": results}


def tide_numbers(case: dict) -> dict:
    gt, preds = Data("gt"), Data("pred")
    for ann in case["annotations"]:
        gt.add_ground_truth(ann["image_id"], ann["category_id"], ann["bbox"])
    for r in case["results"]:
        preds.add_detection(r["image_id"], r["category_id"], r["score"], r["bbox"])
    tide = TIDE(pos_threshold=0.5, background_threshold=0.1, mode=TIDE.BOX)
    run = tide.evaluate(gt, preds, name="pred")
    main = tide.get_main_errors()["pred"]
    counts = dict.fromkeys(SHORT, 0)
    for error in run.errors:
        counts[error.short_name] += 1
    return {"AP50": run.ap / 100, "dAP50": {k: main[k] / 100 for k in SHORT}, "counts": counts}


def main() -> None:
    cases = []
    for seed in SEEDS:
        case = scene(seed)
        case["categories"] = [{"id": k + 1, "name": f"class{k}"} for k in range(NUM_CLASSES)]
        case["tide"] = tide_numbers(case)
        cases.append(case)
    OUT.write_text(json.dumps({"generator": "tools/tide_fixture.py", "tidecv": "1.0.1",
                               "cases": cases}, indent=None) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
