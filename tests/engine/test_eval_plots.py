"""The end of training writes the last evaluation's report into <work_dir>/plots (rank 0, when
evaluation.plots is on): the same pictures and report.json as det test --plots, from the
detections of the last evaluation, whose metrics the log's last val record holds."""

from __future__ import annotations

import json

import cv2
import pytest

from detcli.engine.hooks.eval_hook import PLOTS_DIR
from detcli.engine.trainer import train_detector
from detcli.viz.report_plots import PLOT_FILES


@pytest.mark.usefixtures("one_thread")
def test_a_finished_run_writes_the_last_evaluations_report(tiny_config, tmp_path):
    loaded = tiny_config("runner.max_epochs=1", "evaluation.plots=true")
    result = train_detector(loaded, work_dir=tmp_path, device="cpu")
    plots = tmp_path / PLOTS_DIR
    assert sorted(p.name for p in plots.iterdir()) == sorted([*PLOT_FILES, "report.json"])
    for name in PLOT_FILES:
        assert cv2.imread(str(plots / name)) is not None, name
    report = json.loads((plots / "report.json").read_text())
    last_val = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
                if json.loads(line)["mode"] == "val"][-1]
    assert report["metrics"]["bbox_mAP"] == last_val["bbox_mAP"] == result.metrics["bbox_mAP"]
    assert report["per_class"] == result.metrics["per_class"]
    assert report["options"] == {"conf_iou": 0.5, "conf_score": 0.3, "top_images": 20}


@pytest.mark.usefixtures("one_thread")
def test_plots_off_writes_none(tiny_config, tmp_path):
    train_detector(tiny_config("runner.max_epochs=1"), work_dir=tmp_path, device="cpu")
    assert not (tmp_path / PLOTS_DIR).exists()  # the test config turns evaluation.plots off
