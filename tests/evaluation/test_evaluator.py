"""build_evaluator: one metric, several metrics, the [evaluation] settings, and the COCOeval
backends (faster-coco-eval gives pycocotools' numbers; a missing package is a ConfigError
when the evaluator is built)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from pydantic import ValidationError

from detcli.errors import ConfigError
from detcli.evaluation.coco import CocoEvaluator
from detcli.evaluation.config import EvaluationConfig
from detcli.evaluation.evaluator import CombinedEvaluator, build_evaluator
from detcli.evaluation.voc import VocEvaluator
from tests.evaluation.test_coco import CAT, DOG, ListDataset, dets
from tests.evaluation.test_voc import WORKED_DETS, WORKED_GT



def test_one_metric_gives_its_evaluator_with_the_configured_settings():
    ds = ListDataset(WORKED_GT)
    assert isinstance(build_evaluator(EvaluationConfig(), ds), CocoEvaluator)
    voc = build_evaluator(EvaluationConfig(metric="voc", voc={"eval_mode": "area",
                                                              "iou_thrs": [0.5, 0.75],
                                                              "use_legacy_coordinate": False}), ds)
    assert isinstance(voc, VocEvaluator)
    assert (voc.eval_mode, voc.iou_thrs, voc.legacy) == ("area", (0.5, 0.75), False)
    assert EvaluationConfig(metric="voc").voc.thresholds == (0.5,)  # VOCMetric's defaults
    assert EvaluationConfig(metric="voc").voc.eval_mode == "11points"


def test_several_metrics_are_computed_side_by_side():
    ds = ListDataset(WORKED_GT)
    cfg = EvaluationConfig(metric=["voc", "bbox"], voc={"use_legacy_coordinate": False})
    evaluator = build_evaluator(cfg, ds)
    assert isinstance(evaluator, CombinedEvaluator) and cfg.primary_key == "voc_mAP"
    metrics = evaluator.evaluate(WORKED_DETS)
    alone = {"voc": VocEvaluator(ds, use_legacy_coordinate=False).evaluate(WORKED_DETS),
             "bbox": CocoEvaluator(ds).evaluate(WORKED_DETS)}
    assert list(metrics)[:4] == ["voc_mAP", "voc_AP50", "voc_mAP_11points", "voc_mAP_area"]
    for part in alone.values():
        assert {k: v for k, v in metrics.items() if k in part and k != "per_class"} == \
               {k: v for k, v in part.items() if k != "per_class"}
    # one entry per class holding both metrics' per-class keys
    cat = metrics["per_class"][CAT]
    assert cat == {**alone["voc"]["per_class"][CAT], **alone["bbox"]["per_class"][CAT]}
    assert cat["voc_AP"] == pytest.approx(42 / 55) and cat["AP50"] == pytest.approx(76.4 / 101)
    assert evaluator.results(WORKED_DETS) == CocoEvaluator(ds).results(WORKED_DETS)
    assert evaluator.class_names == ["cat", "dog"]


def test_primary_key_is_what_save_best_auto_picks():
    assert EvaluationConfig().primary_key == "bbox_mAP"
    assert EvaluationConfig(metric="voc").primary_key == "voc_mAP"
    assert EvaluationConfig(metric=["bbox", "voc"]).primary_key == "bbox_mAP"


@pytest.mark.parametrize("settings, message", [
    ({"metric": []}, "is empty; name at least one of"),
    ({"metric": ["voc", "voc"]}, "names a metric twice"),
    ({"metric": "keypoints"}, "Input should be 'bbox'"),
    ({"voc": {"iou_thrs": [0.5, 1.5]}}, r"must be in \(0, 1\]; got \[1.5\]"),
    ({"voc": {"iou_thrs": [0.5, 0.5]}}, "repeat a value"),
    ({"voc": {"eval_mode": "voc07"}}, "'11points' or 'area'"),
    ({"backend": "fast"}, "'pycocotools' or 'faster-coco-eval'"),
])
def test_bad_settings_name_what_would_be_valid(settings, message):
    with pytest.raises(ValidationError, match=message):
        EvaluationConfig(**settings)


def grid_case(seed: int) -> tuple[ListDataset, list]:
    """20 images of random GT (both classes, some ignore boxes) and jittered, duplicated and
    background detections with continuous scores."""
    rng = np.random.default_rng(seed)
    gts, ignores, found = [], [], []
    for _ in range(20):
        boxes = [list(np.round(rng.uniform(0, 60, 2).tolist() + rng.uniform(70, 100, 2).tolist(), 1))
                 for _ in range(rng.integers(0, 4))]
        labels = rng.integers(0, 2, size=len(boxes)).tolist()
        rows = [(list(np.array(b) + rng.uniform(-8, 8, 4)), float(rng.random()), lab)
                for b, lab in zip(boxes, labels) for _ in range(rng.choice([0, 1, 2]))]
        rows += [(list(rng.uniform(0, 50, 2)) + list(rng.uniform(55, 100, 2)), float(rng.random()),
                  int(rng.integers(0, 2))) for _ in range(rng.integers(0, 3))]
        gts.append((boxes, labels))
        ignores.append(([[0, 0, 10, 10]], [DOG]) if rng.random() < 0.3 else ([], []))
        found.append(dets(*rows))
    return ListDataset(gts, ignores=ignores), found


def assert_same_metrics(got: dict, expected: dict) -> None:
    """Every key, per-class entries too, to 1e-12 (None and names exactly)."""
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        if key != "per_class":
            assert got[key] == pytest.approx(value, abs=1e-12), key
    for row_got, row in zip(got["per_class"], expected["per_class"], strict=True):
        assert row_got.keys() == row.keys()
        for key, value in row.items():
            exact = value is None or isinstance(value, str)
            assert row_got[key] == (value if exact else pytest.approx(value, abs=1e-12)), key


@pytest.mark.parametrize("seed", [0, 1])
def test_faster_coco_eval_gives_the_pycocotools_numbers(seed):
    """The two run the same algorithm; faster-coco-eval accumulates in C++, so its floating
    sums may differ in the last bits (seen: 2e-16): equal to 1e-12, not bitwise."""
    ds, found = grid_case(seed)
    slow, fast = CocoEvaluator(ds), CocoEvaluator(ds, backend="faster-coco-eval")
    a, b = (e.score_results(e.results(found)) for e in (slow, fast))
    assert a.metrics["bbox_mAP"] > 0.05  # something to compare
    assert_same_metrics(b.metrics, a.metrics)
    for name in ("precision", "recall", "scores"):
        np.testing.assert_allclose(getattr(b.accumulated, name), getattr(a.accumulated, name),
                                   rtol=0, atol=1e-12, err_msg=name)


def test_faster_coco_eval_on_the_hand_built_cases():
    cases = [(ListDataset([([[10, 10, 50, 50]], [DOG])], ignores=[([[60, 60, 100, 100]], [DOG])]),
              [dets(([62, 62, 98, 98], 0.95, DOG), ([10, 10, 50, 50], 0.9, DOG))]),
             (ListDataset(WORKED_GT), WORKED_DETS),
             (ListDataset([([[10, 10, 50, 50]], [CAT]), ([], [])]), [dets(), dets()])]
    for ds, found in cases:
        assert_same_metrics(CocoEvaluator(ds, backend="faster-coco-eval").evaluate(found),
                            CocoEvaluator(ds).evaluate(found))


def test_missing_faster_coco_eval_is_a_config_error_when_the_evaluator_is_built(monkeypatch):
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # import fails as if not installed
    cfg = EvaluationConfig(backend="faster-coco-eval")  # the config itself is fine
    with pytest.raises(ConfigError, match="needs the faster-coco-eval package") as err:
        build_evaluator(cfg, ListDataset(WORKED_GT))
    assert err.value.hint.startswith("pip install 'detcli[fast-eval]'")
    assert isinstance(build_evaluator(EvaluationConfig(), ListDataset(WORKED_GT)), CocoEvaluator)
