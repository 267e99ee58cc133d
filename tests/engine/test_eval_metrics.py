"""The in-training evaluation scores with evaluation.metric: VOC and COCO side by side, the
best checkpoint by the primary metric, and a missing backend stops the run before it trains."""

from __future__ import annotations

import json
import sys

import pytest

from detcli.engine.context import Hook, TrainContext
from detcli.engine.hooks.logger import format_record
from detcli.engine.trainer import train_detector
from detcli.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


class CountIters(Hook):
    def __init__(self) -> None:
        self.iters = 0

    def after_iter(self, ctx: TrainContext) -> None:
        self.iters += 1


def test_voc_and_coco_metrics_are_logged_and_voc_picks_the_best(tiny_config, tmp_path):
    loaded = tiny_config("runner.max_epochs=1", 'evaluation.metric=["voc", "bbox"]',
                         'evaluation.voc.eval_mode="area"')
    result = train_detector(loaded, work_dir=tmp_path, device="cpu")
    val = [r for r in result.history if r["mode"] == "val"][-1]
    assert {"voc_mAP", "voc_AP50", "voc_mAP_11points", "voc_mAP_area", "bbox_mAP"} <= set(val)
    assert val["voc_mAP"] == val["voc_mAP_area"]
    assert {"class", "voc_AP", "voc_num_gts", "AP", "AP50"} <= set(val["per_class"][0])
    assert result.best["metric"] == "voc_mAP" and result.best["value"] == val["voc_mAP"]
    assert sorted(p.name for p in tmp_path.glob("best_*.pth")) == ["best_voc_mAP.pth"]
    line = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert line["mode"] == "val" and line["voc_mAP"] == pytest.approx(val["voc_mAP"], rel=1e-5)
    assert "voc_mAP: " in format_record(val) and "bbox_mAP: " in format_record(val)


def test_a_missing_backend_stops_the_run_before_its_first_iteration(tiny_config, tmp_path,
                                                                   monkeypatch):
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # as if not installed
    counter = CountIters()
    loaded = tiny_config("runner.max_epochs=1", 'evaluation.backend="faster-coco-eval"')
    with pytest.raises(ConfigError, match="needs the faster-coco-eval package"):
        train_detector(loaded, work_dir=tmp_path, device="cpu", callbacks=[counter])
    assert counter.iters == 0 and not list(tmp_path.glob("*.pth"))
