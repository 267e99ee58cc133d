"""`det test` renders whatever the configured evaluation reports: VOC keys with labels, both
metrics side by side, and a missing backend as a config error before any image is run."""

from __future__ import annotations

import json
import sys

from tests.cli.test_test_cli import CLASSES, run, setup  # noqa: F401  (setup: the fixture)


def test_voc_and_coco_tables(setup):
    config, checkpoint, _ = setup
    result = run(config, checkpoint, "--device", "cpu", "--set", 'evaluation.metric=["bbox", "voc"]',
                 "--set", "evaluation.voc.iou_thrs=[0.5, 0.75]")
    assert result.exit_code == 0, result.output
    for text in ("COCO bbox metrics and VOC metrics", "AP @[IoU 0.50:0.95]",
                 "VOC mAP (evaluation.voc.eval_mode)", "VOC AP @[IoU 0.75]", "voc_AP50",
                 "VOC mAP, 11 points (VOC2007)", "VOC mAP, area (VOC2010+)", "voc_AP"):
        assert text in result.stdout, text


def test_voc_only_json(setup):
    config, checkpoint, _ = setup
    result = run(config, checkpoint, "--device", "cpu", "--json", "--set", 'evaluation.metric="voc"')
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)["metrics"]
    assert set(metrics) == {"voc_mAP", "voc_AP50", "voc_mAP_11points", "voc_mAP_area", "per_class"}
    assert [c["class"] for c in metrics["per_class"]] == CLASSES
    assert set(metrics["per_class"][0]) == {"class", "voc_num_gts", "voc_num_dets", "voc_recall",
                                           "voc_AP"}


def test_missing_backend_is_a_config_error_naming_the_extra(setup, monkeypatch):
    config, checkpoint, _ = setup
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # as if not installed
    result = run(config, checkpoint, "--device", "cpu", "--set",
                 'evaluation.backend="faster-coco-eval"')
    assert result.exit_code == 2, result.output
    assert "needs the faster-coco-eval package" in result.output
    assert "pip install 'detcli[fast-eval]'" in result.output
