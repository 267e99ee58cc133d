"""`det viz assign` and `det analyze anchors` on RTMDet (the dynamic soft-label assigner),
through CliRunner: the stand-in predictions, a checkpoint's, the JSON keys, point coverage.

Coverage set: one 48 x 32 image, resized x2 to the 96 x 64 input (points every 8, 16 and 32
pixels from 0, offset 0). GT A [8, 8, 24, 24] -> [16, 16, 48, 48] (32 x 32 = 1024: medium)
holds points x, y in {24, 32, 40} on level 0, (32, 32) on levels 1 and 2: the only candidates.
GT B [0.5, 0.5, 3.5, 3.5] -> [1, 1, 7, 7] (small) holds no point, yet its dynamic k is at least
1: it takes its cheapest candidate, a point of A, unless A keeps it (cheaper for A). Either way
B has no positive inside it: zero positives or low-quality only, whatever the predictions.
"""

from __future__ import annotations

import json

import cv2
import pytest
import torch
import typer
from typer.testing import CliRunner

from detcli.analysis.assign_view import visualize_assignment
from detcli.cli import analyze
from detcli.cli.viz import app as viz_app, read_gt
from detcli.config.loader import load_config
from detcli.models.build import build_detector
from detcli.viz.assign_picture import legend_entries
from tests.analysis.anchor_data import hand_config
from tests.analysis.fcos_atss_data import ROOT, on_tiny
from tests.analysis.tiny_data import make_tiny

RTMDET = ROOT / "presets" / "rtmdet_tiny_synth.toml"
BOXES = ["--box", "10,20,40,50", "--box", "60,10,100,80,circle"]
COST_KEYS = {"predictions", "topk", "soft_center_radius", "iou_weight", "num_candidates", "gts"}
GT_KEYS = {"index", "num_inside", "num_inside_per_level", "top_iou_sum", "dynamic_k", "num_pos",
           "mean_soft_label", "cheapest"}
CANDIDATE_KEYS = {"prior", "level", "point", "cls_cost", "iou_cost", "center_prior", "cost",
                  "iou", "chosen", "positive"}

root = typer.Typer()  # wired as detcli/cli/main.py does, without the other groups
root.add_typer(analyze.app, name="analyze")


@pytest.fixture
def rtmdet_tiny(tmp_path):
    tiny = make_tiny(tmp_path)
    return tiny, on_tiny(tiny, RTMDET)


def _assign_json(image, config, out, *extra):
    result = CliRunner().invoke(viz_app, ["assign", str(image), "-c", str(config), *BOXES,
                                          "--out", str(out), "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_viz_assign_explains_the_dynamic_assigner_on_stand_in_predictions(rtmdet_tiny, tmp_path):
    tiny, config = rtmdet_tiny
    out = tmp_path / "rtm.png"
    data = _assign_json(tiny.image_a, config, out)
    assert data["assigner"] == "DynamicSoftLabelAssigner"
    assert cv2.imread(str(out)).shape[:2] == tuple(data["picture_shape"])
    costs = data["soft_label"]
    assert set(costs) == COST_KEYS and costs["topk"] == 13
    assert costs["predictions"].startswith("stand-in predictions") and "seed 0" in costs["predictions"]
    assert [set(gt) for gt in costs["gts"]] == [GT_KEYS, GT_KEYS]
    for gt, row in zip(costs["gts"], data["gts"]):
        assert gt["num_pos"] == row["num_pos"] > 0
        assert gt["dynamic_k"] == max(1, int(gt["top_iou_sum"])) <= 13
        assert sum(c["chosen"] for c in gt["cheapest"]) == gt["dynamic_k"]
        assert all(set(c) == CANDIDATE_KEYS for c in gt["cheapest"])
        costs_in_order = [c["cost"] for c in gt["cheapest"]]
        assert costs_in_order == sorted(costs_in_order)
        soft = [c["iou"] for c in gt["cheapest"] if c["positive"]]
        assert gt["mean_soft_label"] == pytest.approx(sum(soft) / len(soft), abs=1e-3)
    assert data["counts"]["positive"] == sum(gt["num_pos"] for gt in costs["gts"])
    again = _assign_json(tiny.image_a, config, out)  # seeded: the same stand-in
    assert again["soft_label"] == costs


def test_viz_assign_text_output_and_picture_legend_name_the_predictions(rtmdet_tiny, tmp_path):
    tiny, config = rtmdet_tiny
    result = CliRunner().invoke(viz_app, ["assign", str(tiny.image_a), "-c", str(config), *BOXES,
                                          "--out", str(tmp_path / "a.png"), "--seed", "2"])
    assert result.exit_code == 0, result.output
    assert "#\tclass\tinside\tinside_per_level\ttop_k_iou_sum\tdynamic_k\tpositives" in result.stdout
    assert "ranked by stand-in predictions" in result.stdout and "seed 2" in result.stdout
    cfg = load_config(config).cfg
    view = visualize_assignment(cfg, tiny.image_a, read_gt(cfg, tiny.image_a, None, BOXES[1::2]))
    texts = [text for text, _, _ in legend_entries(view, False)]
    assert "candidate point, not pos" in texts and "ranked by stand-in preds:" in texts
    k = view.explained.costs.gts[0].dynamic_k
    assert any(t.startswith("#0 square: ") and f"k {k}" in t for t in texts)


def test_viz_assign_with_a_checkpoint_ranks_by_the_models_predictions(rtmdet_tiny, tmp_path):
    tiny, config = rtmdet_tiny
    torch.manual_seed(0)
    model = build_detector(load_config(config).cfg.model)
    checkpoint = tmp_path / "rtm.pth"
    torch.save({"state_dict": model.state_dict(), "meta": {}}, checkpoint)
    data = _assign_json(tiny.image_a, config, tmp_path / "c.png", "--checkpoint", str(checkpoint))
    assert data["soft_label"]["predictions"] == f"the predictions of {checkpoint}"
    for gt in data["soft_label"]["gts"]:
        assert sum(c["chosen"] for c in gt["cheapest"]) == gt["dynamic_k"]
    result = CliRunner().invoke(viz_app, ["assign", str(tiny.image_a), "-c", str(config), *BOXES,
                                          "--jitter", "4"])
    assert result.exit_code == 1 and "--jitter: RoI sampling options apply" in result.output


def _coverage_config(folder):
    coco = {"images": [{"id": 1, "file_name": "a.jpg", "width": 48, "height": 32}],
            "categories": [{"id": 1, "name": "square"}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 1, "bbox": [8, 8, 16, 16], "area": 256,
                 "iscrowd": 0},
                {"id": 2, "image_id": 1, "category_id": 1, "bbox": [0.5, 0.5, 3, 3], "area": 9,
                 "iscrowd": 0}]}
    text = hand_config(folder).read_text()
    (folder / "cover.json").write_text(json.dumps(coco))
    config = folder / "rtm_cover.toml"
    config.write_text(f'extends = ["{RTMDET}"]\n' + text[text.index("[data.val]"):]
                      .replace(str(folder / "hand.json"), str(folder / "cover.json")))
    return config


def test_analyze_anchors_reports_point_coverage_of_rtmdet(tmp_path):
    config = _coverage_config(tmp_path)
    result = CliRunner().invoke(root, ["analyze", "anchors", str(config)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("points: MlvlPointGenerator strides [8, 16, 32], offset 0.0")
    assert "DynamicSoftLabelAssigner soft_center_radius 3.0, topk 13, iou_weight 3.0" in out
    assert "ranked by stand-in predictions" in out
    assert "a.jpg  box" not in out or "a.jpg  box [0.5, 0.5, 3.5, 3.5]" in out  # only B may be listed
    data = json.loads(CliRunner().invoke(root, ["analyze", "anchors", str(config), "--json"]).stdout)
    assert data["assigner"]["predictions"].startswith("stand-in predictions")
    small, medium = data["by_size"]["small"], data["by_size"]["medium"]
    # B: no positive, or only positives outside it (k >= 1 takes a point of A): low quality
    assert small["zero_positive_share"] + small["low_quality_only_share"] == 1.0
    assert (medium["zero_positive_share"], medium["low_quality_only_share"]) == (0.0, 0.0)
    pos = sum(level["positive_priors"] for level in data["by_level"])
    assert 1 <= pos <= 11  # every positive is one of the 9 + 1 + 1 points inside A
    assert data["overall"]["positive_level_share"] == pytest.approx(
        [level["positive_priors"] / pos for level in data["by_level"]], abs=1e-4)
    assert "level of each group's positives (share per level)" in out
