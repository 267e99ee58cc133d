"""`det test --plots DIR` end to end: the pictures and report.json, the report's tables, the
--json payload, and --conf-iou / --conf-score reaching the report (the random tiny RetinaNet
checkpoint of test_test_cli on 2 synthetic images)."""

from __future__ import annotations

import json

import cv2

from tests.cli.test_test_cli import CLASSES, NUM_IMAGES, run, setup  # noqa: F401 (fixture)

PICTURES = ["pr_curves_50.png", "pr_curves_75.png", "confusion_matrix.png",
            "confusion_matrix_normalised.png", "errors.png"]
AP_KEYS = ["class", "AP", "AP50", "AP75", "AP_s", "AP_m", "AP_l"]


def test_plots_json_writes_the_files_and_carries_the_report(setup, tmp_path):
    config, checkpoint, _ = setup
    plots = tmp_path / "plots"
    result = run(config, checkpoint, "--plots", plots, "--conf-score", "0.4", "--json",
                 "--device", "cpu")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["plots"] == str(plots)
    assert [p.split("/")[-1] for p in payload["plot_files"]] == [*PICTURES, "report.json"]
    for name in PICTURES:
        assert cv2.imread(str(plots / name)) is not None, name
    report = payload["report"]
    assert json.loads((plots / "report.json").read_text()) == report
    assert report["options"] == {"conf_iou": 0.5, "conf_score": 0.4, "top_images": 20}
    assert report["classes"] == CLASSES
    assert [list(row) for row in report["per_class"]] == [AP_KEYS] * len(CLASSES)
    assert [list(row) for row in payload["metrics"]["per_class"]] == [AP_KEYS] * len(CLASSES)
    assert [c["iou"] for c in report["pr_curves"]] == [0.5, 0.75]
    assert report["confusion"]["score_thr"] == 0.4 and len(report["confusion"]["counts"]) == 4
    assert [e["short"] for e in report["errors"]["errors"]] == [
        "Cls", "Loc", "Both", "Dupe", "Bkg", "Miss"]
    # the worst images are dataset files, their errors the confusion matrix's
    confusion = report["confusion"]["counts"]
    worst = report["worst_images"]
    assert {w["file_name"] for w in worst} <= {f"{i:06d}.jpg" for i in range(1, NUM_IMAGES + 1)}
    assert sum(w["false_positives"] for w in worst) == sum(
        confusion[i][j] for i in range(4) for j in range(3) if i != j)
    assert sum(w["missed"] for w in worst) == sum(
        confusion[i][j] for i in range(3) for j in range(4) if i != j)
    assert "wrote 6 files to" in result.stderr


def test_plots_tables_and_no_report_without_plots(setup, tmp_path):
    config, checkpoint, _ = setup
    result = run(config, checkpoint, "--plots", tmp_path / "p", "--device", "cpu")
    assert result.exit_code == 0, result.output
    for text in ("per-class AP", "AP50", "AP75", "AP_s", "AP_l", "images with the most errors",
                 "IoU 0.5, score >= 0.3", "000001.jpg", "confusion matrix (IoU 0.5, score >= 0.3)",
                 "background", "where AP50", "classification (Cls)", "missed (Miss)"):
        assert text in result.stdout, text
    plain = json.loads(run(config, checkpoint, "--json", "--device", "cpu").stdout)
    assert plain["report"] is None and plain["plots"] is None and plain["plot_files"] == []


def test_a_bad_threshold_is_refused_naming_the_option(setup, tmp_path):
    config, checkpoint, _ = setup
    result = run(config, checkpoint, "--plots", tmp_path / "p", "--conf-iou", "0")
    assert result.exit_code == 2
    assert "--conf-iou" in result.output and "(0, 1]" in result.output
