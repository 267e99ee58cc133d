"""write_report_plots: every picture of the report and report.json, in one folder."""

from __future__ import annotations

import json

import cv2

from detcli.evaluation.report import evaluation_report
from detcli.viz.report_plots import PLOT_FILES, write_report_plots
from tests.evaluation.test_worst_images import case


def test_every_picture_and_the_json_are_written(tmp_path):
    evaluator, results = case()
    report = evaluation_report(evaluator, results)
    written = write_report_plots(report, tmp_path / "plots")
    assert [p.name for p in written] == [*PLOT_FILES, "report.json"]
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(
        [*PLOT_FILES, "report.json"])  # nothing else (no temporary file left)
    for path in written[:-1]:
        image = cv2.imread(str(path))
        assert image is not None and image.shape[0] > 100 and image.std() > 0, path.name
    assert json.loads(written[-1].read_text()) == json.loads(json.dumps(report.to_json()))
