"""detr_r50's training transforms (RandomFlip, then the RandomChoice of a multi-scale resize or
resize / crop / resize) against MMDetection 3.3's on the same image after the same numpy seeds:
the same branch, crop and scales, so the same image (shape and exact pixel fingerprint) and
boxes. The fixture is written by tools/mmdet_fixtures/detr_pipeline.py (MMDetection's
environment)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from detcli.config.loader import load_config
from detcli.data.transforms import Compose

FIXTURE = np.load(Path(__file__).parents[2] / "fixtures" / "mmdet" / "detr_train_pipeline.npz")
SEEDS = range(12)


def fingerprint(img):
    weights = (np.arange(img.size, dtype=np.int64) % 251 + 1).reshape(img.shape)
    return int((img.astype(np.int64) * weights).sum())


@pytest.fixture(scope="module")
def steps():
    pipeline = load_config("detr_r50").cfg.data.train.pipeline
    assert [t.type for t in pipeline[2:4]] == ["RandomFlip", "RandomChoice"]
    return Compose(pipeline[2:4])


@pytest.mark.parametrize("seed", SEEDS)
def test_detr_r50_pipeline_draws_as_mmdetection(steps, seed):
    img = FIXTURE["img"]
    results = {"img": img.copy(), "img_shape": img.shape, "ori_shape": img.shape,
               "gt_bboxes": FIXTURE["boxes"].copy(), "gt_labels": FIXTURE["labels"].copy(),
               "bbox_fields": ["gt_bboxes"]}
    np.random.seed(seed)
    out = steps(results)
    assert out["img"].shape == tuple(FIXTURE[f"s{seed}_shape"])
    assert fingerprint(out["img"]) == int(FIXTURE[f"s{seed}_fingerprint"])
    np.testing.assert_allclose(out["gt_bboxes"], FIXTURE[f"s{seed}_boxes"], rtol=0, atol=1e-3)
    np.testing.assert_array_equal(out["gt_labels"], FIXTURE[f"s{seed}_labels"])
    assert bool(out["flip"]) == bool(FIXTURE[f"s{seed}_flip"])


def test_the_seeds_take_both_branches():
    """Aspect ratios the first branch cannot give (it keeps the input's 4:3) show the crop
    branch ran for some seeds, and 4:3 ones the plain resize for others."""
    ratios = [FIXTURE[f"s{s}_shape"][1] / FIXTURE[f"s{s}_shape"][0] for s in SEEDS]
    kept = [abs(r - 4 / 3) < 0.01 for r in ratios]
    assert any(kept) and not all(kept)
