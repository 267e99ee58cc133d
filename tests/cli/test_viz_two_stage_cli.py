"""`det viz assign` and `det analyze anchors` on a two-stage config through typer's CliRunner:
the RPN's anchors, the RoI sampling picture, table and JSON (jittered proposals and a
checkpoint's RPN proposals), the exit codes of the RoI options, and the RPN anchor analysis
with --optimize."""

from __future__ import annotations

import json
import re

import cv2
import pytest
import torch
from typer.testing import CliRunner

from detcli.cli.main import app as main_app
from detcli.config.loader import load_config
from detcli.data.synth import make_synthetic_dataset
from detcli.engine.checkpoint import save_checkpoint
from detcli.models.build import build_detector
from tests.analysis.test_roi_sampling import FRCNN, SMALL, two_stage_config
from tests.analysis.tiny_data import make_tiny

BOXES = ["--box", "10,20,40,50,square", "--box", "60,10,100,80,circle"]


def viz(*args):
    return CliRunner().invoke(main_app, ["viz", "assign", *[str(a) for a in args]])


def anchors(*args):
    return CliRunner().invoke(main_app, ["analyze", "anchors", *[str(a) for a in args]])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(tiny data, the tiny Faster R-CNN config, a checkpoint of its model, a 2-class one)."""
    folder = tmp_path_factory.mktemp("viz2")
    tiny = make_tiny(folder)
    config = two_stage_config(tiny, folder)
    torch.manual_seed(0)
    model = build_detector(load_config(config).cfg.model)  # trained for 0 steps
    good = save_checkpoint(folder / "frcnn.pth", model,
                           meta={"classes": ["square", "circle", "triangle"]}, rng=False)
    two = build_detector(load_config(config, ["model.roi_head.bbox_head.num_classes=2"]).cfg.model)
    bad = save_checkpoint(folder / "two.pth", two, meta={"classes": ["cat", "dog"]}, rng=False)
    return tiny, config, good, bad


def rcnn_rows(stdout):
    """The RoI table's rows (tab-separated, after its header) -> {index: fields}."""
    lines = stdout.splitlines()
    start = lines.index("\t".join(["#", "class", "proposals", "sampled_pos", "gt_sampled",
                                   "best_iou", "note"]))
    rows = {}
    for line in lines[start + 1:]:
        if "\t" not in line:
            break
        fields = line.split("\t")
        rows[int(fields[0])] = fields
    return rows


def test_jittered_proposals_picture_table_and_json_agree(setup, tmp_path):
    tiny, config, _, _ = setup
    out = tmp_path / "pics" / "a.png"
    args = [tiny.image_a, "-c", config, *BOXES, "--jitter", 12, "--background", 40, "--seed", 3,
            "--set", "model.train_cfg.rcnn.sampler.num=32", "--out", out]
    result = viz(*args, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["anchors_of"] == "model.rpn_head"
    assert sum(r["positive"] for r in data["levels"]) == data["counts"]["positive"] > 0
    rcnn = data["rcnn"]
    c = rcnn["counts"]
    assert rcnn["proposals"]["source"] == "jitter" and rcnn["proposals"]["jitter_per_gt"] == 12
    assert c["proposals"] == 2 * 12 + 40 and c["gt_added"] == 2 and c["candidates"] == 66
    assert c["sampled_positive"] == min(c["assigned_positive"], 8)  # int(32 * 0.25)
    assert c["sampled_negative"] == min(32 - c["sampled_positive"], c["assigned_negative"])
    assert c["not_sampled"] == 66 - c["sampled_positive"] - c["sampled_negative"]
    assert c["assigned_positive"] == sum(g["num_proposals"] for g in rcnn["gts"]) + 2
    assert c["sampled_positive"] == sum(g["num_sampled_pos"] for g in rcnn["gts"])
    assert [g["class"] for g in rcnn["gts"]] == ["square", "circle"]
    picture = tmp_path / "pics" / "a_rcnn.png"
    assert rcnn["out"] == str(picture)
    # 2 panels of 256 x 192; 7 legend entries, 2 per line (see test_roi_sampling)
    assert rcnn["picture_shape"] == [294, 524] and cv2.imread(str(picture)).shape == (294, 524, 3)
    assert cv2.imread(str(out)).shape[:2] == tuple(data["picture_shape"])

    text = viz(*args)  # the same run, as plain text: the table says what the JSON says
    assert text.exit_code == 0, text.output
    rows = rcnn_rows(text.stdout)
    for gt in rcnn["gts"]:
        fields = rows[gt["index"]]
        assert fields[1:6] == [gt["class"], str(gt["num_proposals"]), str(gt["num_sampled_pos"]),
                               "yes" if gt["gt_sampled"] else "no", f"{gt['best_iou']:.3f}"]
    assert (f"sampled positives {c['sampled_positive']} of {c['assigned_positive']}, negatives "
            f"{c['sampled_negative']} of {c['assigned_negative']} (num 32, pos_fraction 0.25: "
            f"at most 8 positives); not sampled {c['not_sampled']}") in text.stdout
    assert f"wrote {picture} (524x294)" in text.stdout


def test_checkpoint_proposals(setup, tmp_path):
    tiny, config, good, _ = setup
    result = viz(tiny.image_a, "-c", config, *BOXES, "--checkpoint", good, "--device", "cpu",
                 "--set", "model.train_cfg.rpn_proposal.max_per_img=60", "--show-unsampled",
                 "--out", tmp_path / "c.png", "--json")
    assert result.exit_code == 0, result.output
    rcnn = json.loads(result.stdout)["rcnn"]
    c = rcnn["counts"]
    assert rcnn["proposals"]["source"] == "checkpoint"
    assert rcnn["proposals"]["checkpoint"] == str(good)
    assert rcnn["proposals"]["rpn_proposal"]["max_per_img"] == 60
    assert 0 < c["proposals"] <= 60 and c["candidates"] == c["proposals"] + 2
    assert c["sampled_positive"] + c["sampled_negative"] == min(256, c["candidates"])
    assert c["assigned_positive"] == sum(g["num_proposals"] for g in rcnn["gts"]) + 2
    assert (tmp_path / "c_rcnn.png").is_file()


@pytest.mark.parametrize("args, code, message", [
    (["--checkpoint", "two"], 4, "the checkpoint was trained on 2 classes (cat, dog), but the "
                                 "config has model.roi_head.bbox_head.num_classes = 3"),
    (["--checkpoint", "good", "--jitter", "4"], 1, "give one of them"),
    (["--jitter", "-1"], 2, "greater than or equal to 0"),
])
def test_bad_rcnn_options_exit_with_a_message_and_write_nothing(setup, tmp_path, args, code, message):
    tiny, config, good, bad = setup
    args = [{"two": bad, "good": good}.get(a, a) for a in args]
    result = viz(tiny.image_a, "-c", config, *BOXES, *args, "--out", tmp_path / "x.png")
    assert result.exit_code == code, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "x_rcnn.png").exists()


def test_single_stage_config_is_unchanged_and_refuses_rcnn_options(setup, tmp_path):
    tiny, _, good, _ = setup
    result = viz(tiny.image_a, "-c", tiny.config, *BOXES, "--out", tmp_path / "r.png", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert "rcnn" not in data and "anchors_of" not in data
    assert not (tmp_path / "r_rcnn.png").exists()
    refused = viz(tiny.image_a, "-c", tiny.config, *BOXES, "--checkpoint", good,
                  "--out", tmp_path / "s.png")
    assert refused.exit_code == 1
    assert "--checkpoint: RoI sampling options apply to two-stage detectors" in \
        " ".join(refused.output.split())
    assert not (tmp_path / "s.png").exists()


def test_analyze_anchors_reports_and_optimizes_the_rpn_anchors(tmp_path):
    synth = make_synthetic_dataset(tmp_path / "synth", num_train=0, num_val=6, image_size=96, seed=2)
    config = tmp_path / "frcnn_synth.toml"
    config.write_text(f'extends = ["{FRCNN}"]\n{SMALL}[data.val]\nann_file = "{synth.ann_file("val")}"\n'
                      f'img_prefix = "{synth.img_prefix("val")}/"\n')
    result = anchors(config, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["anchors"]["config_key"] == "model.rpn_head.anchor_generator"
    assert report["anchors"]["strides"] == [4, 8, 16, 32, 64] and report["anchors"]["scales"] == [4.0]
    assert report["anchors"]["num_base_priors"] == [3] * 5
    assert report["assigner"]["config_key"] == "model.train_cfg.rpn.assigner"
    assert report["pos_iou_thr"] == 0.7 and report["sampler"]["type"] == "RandomSampler"
    assert report["overall"]["num_gt"] == report["dataset"]["num_gt"] > 0

    text = anchors(config)
    assert text.exit_code == 0, text.output
    assert "anchors (model.rpn_head.anchor_generator): AnchorGenerator strides [4, 8, 16, 32, 64]" \
        in text.stdout
    assert "model.train_cfg.rpn.assigner: MaxIoUAssigner pos_iou_thr 0.7" in text.stdout

    bad = "model.rpn_head.anchor_generator.scales=[24]"  # 96 px and more on level 0
    found = anchors(config, "--set", bad, "--optimize", "--max-evals", 12)
    assert found.exit_code == 0, found.output
    assert "[model.rpn_head.anchor_generator]" in found.stdout
    sets = re.findall(r"--set '([^']+)'", found.stdout)
    assert [s.split("=")[0] for s in sets] == ["model.rpn_head.anchor_generator.ratios",
                                               "model.rpn_head.anchor_generator.scales"]
    before = json.loads(anchors(config, "--set", bad, "--json").stdout)
    pasted = anchors(config, "--set", bad, *[a for s in sets for a in ("--set", s)], "--json")
    assert pasted.exit_code == 0, pasted.output
    after = json.loads(pasted.stdout)
    assert after["overall"]["best_iou"]["mean"] > before["overall"]["best_iou"]["mean"]
    assert after["zero_positive_share"] <= before["zero_positive_share"]
