"""The evaluation report: one call gives the metrics, rows, curves and worst images that the
pieces give on their own, and report.json holds them."""

from __future__ import annotations

import json

import pytest

from detcli.errors import ConfigError
from detcli.evaluation.pr_curves import pr_curves
from detcli.evaluation.report import ReportOptions, evaluation_report, write_report_json
from detcli.evaluation.confusion import confusion_matrix
from detcli.evaluation.errors import error_breakdown
from detcli.evaluation.worst_images import image_errors, worst_images
from tests.evaluation.test_worst_images import case


def test_report_is_the_pieces_put_together(tmp_path):
    evaluator, results = case()
    gt = evaluator.gt
    report = evaluation_report(evaluator, results, ReportOptions(conf_score=0.3, top_images=2))
    scores = evaluator.score_results(results)
    assert report.metrics == scores.metrics
    assert report.per_class == scores.per_class
    assert [c.iou for c in report.pr_curves] == [0.5, 0.75]
    assert report.curves_at(0.75).ap == pr_curves(scores.accumulated, ["cat", "dog"], 0.75).ap
    confusion = confusion_matrix(gt, results, iou_thr=0.5, score_thr=0.3)
    assert (report.confusion.counts == confusion.counts).all()
    assert report.worst_images == worst_images(image_errors(gt, confusion), top=2)
    assert report.errors.to_json() == error_breakdown(gt, results).to_json()
    assert report.errors.ap50 == pytest.approx(scores.metrics["bbox_mAP_50"])
    with pytest.raises(ConfigError, match="not 0.6"):
        report.curves_at(0.6)

    payload = json.loads(write_report_json(report, tmp_path / "r" / "report.json").read_text())
    assert set(payload) == {"options", "classes", "metrics", "per_class", "pr_curves",
                            "confusion", "errors", "worst_images"}
    assert payload["confusion"]["counts"] == confusion.counts.tolist()
    assert payload["options"] == {"conf_iou": 0.5, "conf_score": 0.3, "top_images": 2}
    assert payload["per_class"][0]["class"] == "cat" and "AP75" in payload["per_class"][0]
    assert [w["file_name"] for w in payload["worst_images"]] == ["0.jpg", "2.jpg"]
    assert payload["metrics"]["bbox_mAP_50"] == pytest.approx(scores.metrics["bbox_mAP_50"])
    assert "per_class" not in payload["metrics"]


@pytest.mark.parametrize("kwargs, message", [
    ({"conf_iou": 0.0}, "IoU threshold \\(--conf-iou\\) must be in \\(0, 1\\], got 0.0"),
    ({"conf_score": 1.5}, "score threshold \\(--conf-score\\) must be in \\[0, 1\\], got 1.5"),
    ({"top_images": -1}, "worst images to list must be >= 0"),
])
def test_bad_thresholds_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ReportOptions(**kwargs)
