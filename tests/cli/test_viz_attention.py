"""`det viz attention` through typer's CliRunner: the stand-in's pictures and --json, a
checkpoint's queries (its top score is det predict's), the plain table, and the errors (a
RetinaNet config, options out of range or given together)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from detcli.cli.viz import app
from detcli.inference.detector import Detector
from detcli.models.transformer.deformable import MultiScaleDeformableAttention
from tests.analysis.tiny_data import make_tiny, save_tiny_model, with_preset


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return with_preset(make_tiny(tmp_path_factory.mktemp("attention_cli")), "dino_tiny_synth")


@pytest.fixture(scope="module")
def checkpoint(tiny):
    """A DINO whose attention depends on the query (random offset and weight matrices)."""
    def query_dependent(model: torch.nn.Module) -> None:
        for module in model.modules():
            if isinstance(module, MultiScaleDeformableAttention):
                module.sampling_offsets.weight.normal_(std=0.2)
                module.attention_weights.weight.normal_(std=0.5)

    return save_tiny_model(tiny, "dino.pth", query_dependent)


def test_stand_in_writes_a_picture_per_query_and_json(tiny, tmp_path):
    out = tmp_path / "attn"
    result = run("attention", tiny.config, tiny.image_a, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert sorted(data) == ["detector", "image", "img_shape", "input_shape", "layer", "model",
                            "num_heads", "num_layers", "num_levels", "num_points", "num_queries",
                            "pictures", "queries", "reference", "scale_factor", "selection",
                            "spatial_shapes"]
    assert (data["detector"], data["layer"], data["num_layers"], data["num_queries"]) == \
        ("DINO", 1, 2, 30)
    assert data["model"]["source"] == "stand_in"
    assert data["model"]["text"].startswith("stand-in model (no --checkpoint): DINO with seeded")
    assert data["selection"] == "top 3 by score" and len(data["queries"]) == 3
    assert data["spatial_shapes"] == [[24, 32], [12, 16], [6, 8], [3, 4]]
    for row, picture in zip(data["queries"], data["pictures"]):
        assert np.asarray(row["points"]).shape == (4, 4, 4, 2)  # (M, L, P, 2)
        assert np.allclose(row["weights"], 1 / 16)  # the stand-in's uniform weights
        assert [lv["weight_mass"] for lv in row["levels"]] == [0.25] * 4
        assert picture["query"] == row["query"]
        assert picture["picture"] == str(out / f"q{row['query']}.png")
        assert list(cv2.imread(picture["picture"]).shape[:2]) == picture["picture_shape"]


def test_checkpoint_top_query_is_det_predicts_best_detection(tiny, checkpoint, tmp_path):
    out = tmp_path / "attn"
    result = run("attention", tiny.config, tiny.image_a, "--checkpoint", checkpoint, "--top", "1",
                 "--out", out, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["model"] == {"source": "checkpoint", "text": f"the model of {checkpoint}"}
    (row,) = data["queries"]
    weights = np.asarray(row["weights"])  # (M, L, P), no longer uniform
    assert np.allclose(weights.sum(axis=(1, 2)), 1, atol=1e-5) and weights.std() > 0.01
    assert sum(lv["weight_mass"] for lv in row["levels"]) == pytest.approx(1, abs=1e-5)
    # the best query's score and box are det predict's best detection (original pixels: half)
    detections = Detector.from_checkpoint(tiny.config, checkpoint, score_thr=0.0)(tiny.image_a)
    scores = np.asarray(detections.scores)
    best = int(scores.argmax())
    assert row["score"] == pytest.approx(float(scores[best]), abs=1e-5)
    assert row["class"] == ["square", "circle", "triangle"][int(detections.labels[best])]
    box = np.clip(np.asarray(row["box"]) / 2, 0, [128, 96, 128, 96])
    np.testing.assert_allclose(box, np.asarray(detections.boxes[best]), atol=1e-2)


def test_checkpoint_plain_table_of_chosen_queries_at_layer_0(tiny, checkpoint, tmp_path):
    out = tmp_path / "attn"
    table = run("attention", tiny.config, tiny.image_a, "--checkpoint", checkpoint,
                "--query", 4, "--query", 0, "--layer", 0, "--out", out)
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split("\t") == ["query", "level", "map_w_x_h", "weight_mass",
                                    "mean_distance_px", "weighted_distance_px"]
    assert [line.split("\t")[:3] for line in lines[1:9]] == [
        [q, f"L{lv}", size] for q in ("4", "0") for lv, size in
        enumerate(("32x24", "16x12", "8x6", "4x3"))]
    assert f"the model of {checkpoint}" in table.stdout
    assert f"wrote {out / 'q4.png'}" in table.stdout and (out / "q0.png").is_file()


def test_a_retinanet_config_exits_2_naming_the_detectors_with_deformable_attention(tmp_path):
    data = make_tiny(tmp_path)
    result = run("attention", data.config, data.image_a, "--out", tmp_path / "attn")
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert f"{data.config} configures a RetinaNet, which has no deformable attention" in text
    assert "these detectors have: DINO, DeformableDETR" in text
    assert "Traceback" not in result.output and not (tmp_path / "attn").exists()


@pytest.mark.parametrize("args, message", [
    (["--query", "1", "--top", "2"], "give --query N (which queries) or --top K"),
    (["--query", "30"], "--query 30: the model has 30 queries (0 to 29)"),
    (["--layer", "2"], "--layer 2: the decoder has 2 layers (0 to 1)"),
])
def test_bad_options_exit_1(tiny, tmp_path, args, message):
    result = run("attention", tiny.config, tiny.image_a, "--out", tmp_path / "attn", *args)
    assert result.exit_code == 1, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output and not (tmp_path / "attn").exists()
