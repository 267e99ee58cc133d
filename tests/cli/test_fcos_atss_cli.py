"""`det analyze anchors` and `det viz assign` on FCOS and ATSS configs, through CliRunner.
Datasets and answers: tests/analysis/fcos_atss_data.py."""

from __future__ import annotations

import json

import cv2
import typer
from typer.testing import CliRunner

from detcli.cli import analyze
from detcli.cli.viz import app as viz_app
from tests.analysis.fcos_atss_data import ATSS, FCOS, fcos_hand_config, on_tiny
from tests.analysis.tiny_data import make_tiny

root = typer.Typer()  # wired as detcli/cli/main.py does, without the other groups
root.add_typer(analyze.app, name="analyze")


def test_analyze_anchors_on_fcos_reports_point_coverage(tmp_path):
    result = CliRunner().invoke(root, ["analyze", "anchors", str(fcos_hand_config(tmp_path))])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("points: MlvlPointGenerator strides [16], offset 0.5")
    assert "assigner: FCOSTargets regress_ranges [[-1.0, 100000000.0]]" in out
    assert "zero-positive share: 16.7% (1 of 6 GT boxes get no positive point" in out
    assert "b.jpg  box [26.0, 0.0, 40.0, 12.0]" in out  # GT1 of b.jpg loses to the smaller GT3


def test_viz_assign_on_fcos_and_atss(tmp_path):
    tiny = make_tiny(tmp_path)
    boxes = ["--box", "10,20,40,50", "--box", "60,10,100,80,circle"]
    for preset in (FCOS, ATSS):
        out = tmp_path / f"{preset.stem}.png"
        result = CliRunner().invoke(viz_app, ["assign", str(tiny.image_a), "-c",
                                              str(on_tiny(tiny, preset)), *boxes,
                                              "--out", str(out), "--json"])
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        assert data["counts"]["positive"] > 0 and data["zero_positive_gts"] == []
        assert cv2.imread(str(out)).shape[:2] == tuple(data["picture_shape"])
        if preset == FCOS:
            assert data["assigner"] == "FCOSTargetAssigner"
            assert data["regress_ranges"][0] == [-1.0, 64.0]
        else:
            assert data["assigner"] == "ATSSAssigner"
            assert all(0 < gt["iou_threshold"] < 1 for gt in data["gts"])
