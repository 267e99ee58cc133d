"""`det viz assign` on DETR through typer's CliRunner: the Hungarian matching of the stand-in
queries and of a checkpoint's (every decoder layer), the --json keys, option errors."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from detcli.cli.viz import app
from detcli.config.loader import load_config
from detcli.engine.checkpoint import save_checkpoint
from detcli.inference.detector import Detector
from detcli.models.build import build_detector
from tests.analysis.tiny_data import make_tiny, save_tiny_model, with_preset

# a.png's GT in the network input: the test pipeline doubles it (tests/analysis/tiny_data.py)
GT_A = [[20.0, 40.0, 80.0, 100.0], [120.0, 20.0, 200.0, 160.0]]
COSTS = [{"name": "ClassificationCost", "weight": 1.0}, {"name": "BBoxL1Cost", "weight": 5.0},
         {"name": "IoUCost", "weight": 2.0}]


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return with_preset(make_tiny(tmp_path_factory.mktemp("detr")), "detr_tiny_synth")


@pytest.fixture(scope="module")
def checkpoint(tiny):
    return save_tiny_model(tiny, "detr.pth")


def test_stand_in_matching_json(tiny, tmp_path):
    out = tmp_path / "m.png"
    result = run("assign", tiny.image_a, "-c", tiny.config, "--ann", tiny.ann_file, "--out", out,
                 "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert sorted(data) == ["assigner", "denoising", "flip", "groups", "gts", "image",
                            "img_shape", "input_shape", "match_costs", "picture",
                            "picture_shape", "queries", "scale_factor", "unmatched_gts"]
    assert data["assigner"] == "HungarianAssigner" and data["match_costs"] == COSTS
    queries = data["queries"]
    assert (queries["source"], queries["num_queries"], queries["num_layers"]) == ("stand_in", 20, 1)
    assert queries["text"].startswith("stand-in queries (no --checkpoint): 20 boxes")
    assert data["input_shape"] == [192, 256] and data["groups"] == [] and data["unmatched_gts"] == []
    assert data["denoising"] is None  # DETR has no denoising queries
    gts = data["gts"]
    assert [(g["class"], g["box"]) for g in gts] == [("square", GT_A[0]), ("circle", GT_A[1])]
    for g in gts:
        assert sorted(g) == ["box", "cheapest_query", "class", "costs", "index", "iou", "label",
                             "layers", "query", "query_box", "total_cost"]
        assert [c["name"] for c in g["costs"]] == [c["name"] for c in COSTS]
        assert g["total_cost"] == pytest.approx(sum(c["value"] for c in g["costs"]), abs=1e-5)
        assert 0 <= g["query"] < 20 and 0 < g["iou"] <= 1 and g["layers"] == []
    assert gts[0]["query"] != gts[1]["query"]
    assert list(cv2.imread(str(out)).shape[:2]) == data["picture_shape"]


def test_stand_in_matching_table(tiny, tmp_path):
    result = run("assign", tiny.image_a, "-c", tiny.config, "--box", "10,20,40,50,square",
                 "--out", tmp_path / "m.png")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split("\t") == ["#", "class", "w_x_h", "query", "ClassificationCost",
                                    "BBoxL1Cost", "IoUCost", "total_cost", "iou", "cheaper_query"]
    assert lines[1].split("\t")[:3] == ["0", "square", "60x60"]
    assert "cost = ClassificationCost x1 + BBoxL1Cost x5 + IoUCost x2" in result.stdout
    assert "stand-in queries (no --checkpoint)" in result.stdout
    assert f"wrote {tmp_path / 'm.png'}" in result.stdout


def test_checkpoint_matching_follows_every_decoder_layer(tiny, checkpoint, tmp_path):
    out = tmp_path / "layers.png"
    result = run("assign", tiny.image_a, "-c", tiny.config, "--ann", tiny.ann_file,
                 "--checkpoint", checkpoint, "--layers", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["queries"]["source"], data["queries"]["num_layers"]) == ("checkpoint", 2)
    # the model's own last-layer boxes: detr_tiny_synth keeps all 20 queries as detections,
    # so each matched query's box is one of det predict's (in original pixels: half)
    detections = Detector.from_checkpoint(tiny.config, checkpoint, score_thr=0.0)(tiny.image_a)
    predicted = np.asarray(detections.boxes)  # (20, 4)
    for g in data["gts"]:
        assert [s["layer"] for s in g["layers"]] == [0, 1]
        assert g["layers"][-1]["layer_query"] == g["query"]
        assert g["layers"][-1]["box"] == g["query_box"]
        box = np.clip(np.asarray(g["query_box"]) / 2, 0, [128, 96, 128, 96])
        assert np.abs(predicted - box).max(axis=1).min() < 1e-2
    # an overview and one panel per decoder layer: 3 panels of 256 x 192 side by side
    assert cv2.imread(str(out)).shape[1] == 3 * (256 + 4) + 4


@pytest.mark.parametrize("args, message", [
    (["--layers"], "--layers needs --checkpoint: the stand-in queries have one layer"),
    (["--levels", "0", "--show-negatives"], "--levels, --show-negatives: DETR is a query-based "
                                            "detector without priors or RoI sampling"),
])
def test_options_that_do_not_apply_exit_1(tiny, tmp_path, args, message):
    result = run("assign", tiny.image_a, "-c", tiny.config, "--box", "1,2,30,40",
                 "--out", tmp_path / "x.png", *args)
    assert result.exit_code == 1, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output and not (tmp_path / "x.png").exists()


def test_layers_on_a_dense_detector_exits_1(tmp_path):
    data = make_tiny(tmp_path)
    result = run("assign", data.image_a, "-c", data.config, "--box", "1,2,30,40", "--layers",
                 "--out", tmp_path / "x.png")
    assert result.exit_code == 1, result.output
    assert "--layers applies to query-based detectors (DETR)" in " ".join(result.output.split())


def test_a_checkpoint_of_another_model_exits_4(tiny, tmp_path):
    other = load_config(tiny.config, ["model.num_queries=7"]).cfg.model
    bad = save_checkpoint(tmp_path / "seven.pth", build_detector(other), rng=False)
    result = run("assign", tiny.image_a, "-c", tiny.config, "--box", "1,2,30,40",
                 "--checkpoint", bad, "--out", tmp_path / "x.png")
    assert result.exit_code == 4, result.output
    assert "query_embedding.weight" in result.output and "Traceback" not in result.output
