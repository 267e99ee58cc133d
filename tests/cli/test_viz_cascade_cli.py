"""`det viz assign` and `det analyze anchors` on a Cascade R-CNN config through typer's
CliRunner: one RoI picture per stage, the stage table and its --json, the stand-in refinement
without a checkpoint and the model's with one, and the RPN's anchor report."""

from __future__ import annotations

import json

import cv2
import pytest
import torch
from typer.testing import CliRunner

from detcli.cli.main import app as main_app
from detcli.config.loader import load_config
from detcli.engine.checkpoint import save_checkpoint
from detcli.models.build import build_detector
from tests.analysis.test_roi_sampling import FRCNN, SMALL
from tests.analysis.tiny_data import ROOT, make_tiny

CASCADE = ROOT / "presets" / "cascade_rcnn_tiny_synth.toml"
BOXES = ["--box", "10,20,40,50,square", "--box", "60,10,100,80,circle"]
STAGE_HEADER = "\t".join(["stage", "pos_iou_thr", "boxes", "proposals", "positive_proposals",
                          "unrefined_positive", "sampled_pos", "sampled_neg", "mean_pos_iou",
                          "pos_iou_histogram"])


def run(*args):
    return CliRunner().invoke(main_app, [str(a) for a in args])


def data_config(path, base, tiny, extra=""):
    splits = "".join(f'[data.{s}]\nann_file = "{tiny.ann_file}"\nimg_prefix = "{tiny.root / "images"}/"\n'
                     for s in ("train", "val", "test"))
    path.write_text(f'extends = ["{base}"]\n{extra}{splits}')
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(tiny data, the tiny Cascade R-CNN config on it, a checkpoint of its untrained model)."""
    folder = tmp_path_factory.mktemp("vizcascade")
    tiny = make_tiny(folder)
    config = data_config(folder / "cascade.toml", CASCADE, tiny)
    torch.manual_seed(0)
    model = build_detector(load_config(config).cfg.model)
    checkpoint = save_checkpoint(folder / "cascade.pth", model,
                                 meta={"classes": ["square", "circle", "triangle"]}, rng=False)
    return tiny, config, checkpoint


def stage_rows(stdout):
    lines = stdout.splitlines()
    start = lines.index(STAGE_HEADER)
    return [line.split("\t") for line in lines[start + 1:start + 4]]


def test_one_picture_per_stage_and_a_stage_table_that_agrees_with_the_json(setup, tmp_path):
    tiny, config, _ = setup
    out = tmp_path / "a.png"
    args = ["viz", "assign", tiny.image_a, "-c", config, *BOXES, "--jitter", 12,
            "--background", 30, "--out", out]
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    rcnn = json.loads(result.stdout)["rcnn"]
    stages = rcnn["stages"]
    assert [s["stage"]["index"] for s in stages] == [0, 1, 2]
    assert [s["stage"]["pos_iou_thr"] for s in stages] == [0.5, 0.6, 0.7]
    assert stages[0]["stage"]["refinement"] is None
    assert [s["stage"]["refinement"] for s in stages[1:]] == [{"source": "toward_gt",
                                                               "fraction": 0.5}] * 2
    assert rcnn["counts"] == stages[0]["counts"] and rcnn["out"] == str(tmp_path / "a_rcnn_s0.png")
    assert stages[0]["proposals"]["source"] == "jitter"
    assert [s["proposals"]["source"] for s in stages[1:]] == ["refined", "refined"]
    for t, stage in enumerate(stages):
        picture = tmp_path / f"a_rcnn_s{t}.png"
        assert stage["out"] == str(picture)
        assert list(cv2.imread(str(picture)).shape[:2]) == stage["picture_shape"]
    assert not (tmp_path / "a_rcnn.png").exists()
    c0 = stages[0]["counts"]
    assert c0["proposals"] == 2 * 12 + 30 and c0["candidates"] == 56
    # everything is sampled (56 candidates < num 256), the positive GT boxes dropped after
    # each stage and added again: every stage has the same 54 proposals and 56 candidates
    assert all(s["counts"]["proposals"] == 54 and s["counts"]["candidates"] == 56 for s in stages)
    # the stand-in only improves the positives: the mean IoU of the positive proposals rises,
    # no stricter threshold loses one of them, and without refinement they would have
    means = [s["stage"]["mean_positive_iou"] for s in stages]
    assert means[0] < means[1] < means[2]
    positives = [s["stage"]["positive_proposals"] for s in stages]
    assert positives[0] == positives[1] == positives[2] == c0["assigned_positive"] - 2
    unrefined = [s["stage"]["unrefined_positive"] for s in stages]
    assert unrefined[0] == positives[0] and unrefined[0] >= unrefined[1] >= unrefined[2]
    assert unrefined[2] < positives[2]
    histograms = [s["stage"]["positive_iou_histogram"] for s in stages]
    assert all(h["edges"] == [0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0] for h in histograms)
    assert [sum(h["counts"]) for h in histograms] == positives
    assert sum(histograms[2]["counts"][:3]) == 0  # every stage-2 positive at IoU >= 0.7

    text = run(*args)  # the same run, as plain text
    assert text.exit_code == 0, text.output
    for fields, stage in zip(stage_rows(text.stdout), stages):
        c, info = stage["counts"], stage["stage"]
        assert fields[0] == f"s{info['index']}" and float(fields[1]) == info["pos_iou_thr"]
        assert fields[3:8] == [str(c["proposals"]), str(info["positive_proposals"]),
                               str(info["unrefined_positive"]), str(c["sampled_positive"]),
                               str(c["sampled_negative"])]
        assert fields[8] == f"{info['mean_positive_iou']:.3f}"
        assert fields[9] == "/".join(str(n) for n in info["positive_iou_histogram"]["counts"])
    assert stage_rows(text.stdout)[1][2] == "s0 positives moved 0.5 to GT"
    assert "a stand-in for a trained head's regression" in " ".join(text.stdout.split())
    assert f"wrote {tmp_path / 'a_rcnn_s2.png'}" in text.stdout


def test_a_checkpoint_refines_the_stages_with_its_own_box_heads(setup, tmp_path):
    tiny, config, checkpoint = setup
    result = run("viz", "assign", tiny.image_a, "-c", config, *BOXES, "--checkpoint", checkpoint,
                 "--device", "cpu", "--set", "model.train_cfg.rpn_proposal.max_per_img=40",
                 "--out", tmp_path / "c.png", "--json")
    assert result.exit_code == 0, result.output
    stages = json.loads(result.stdout)["rcnn"]["stages"]
    assert stages[0]["proposals"]["source"] == "checkpoint"
    assert [s["stage"]["refinement"] for s in stages[1:]] == [{"source": "checkpoint"}] * 2
    first = stages[0]["counts"]
    assert 0 < first["proposals"] <= 40
    # every candidate is sampled; the next stage gets them less the 2 positive GT boxes
    assert stages[1]["counts"]["proposals"] == first["candidates"] - 2
    assert all((tmp_path / f"c_rcnn_s{t}.png").is_file() for t in range(3))


def test_analyze_anchors_reports_a_cascades_rpn_as_faster_rcnns(setup, tmp_path):
    """The cascade changes the RoI head only: its RPN (the tiny presets share it) gets the
    report Faster R-CNN's gets, value for value."""
    tiny, config, _ = setup
    frcnn = data_config(tmp_path / "frcnn.toml", FRCNN, tiny, SMALL)
    cascade = run("analyze", "anchors", config, "--json")
    faster = run("analyze", "anchors", frcnn, "--json")
    assert cascade.exit_code == 0, cascade.output
    assert faster.exit_code == 0, faster.output
    mine, theirs = json.loads(cascade.stdout), json.loads(faster.stdout)
    assert mine["anchors"]["config_key"] == "model.rpn_head.anchor_generator"
    assert mine["assigner"]["config_key"] == "model.train_cfg.rpn.assigner"
    assert mine["pos_iou_thr"] == 0.7 and mine["overall"]["num_gt"] == 3
    for key in ("anchors", "assigner", "sampler", "pos_iou_thr", "overall", "dataset"):
        assert mine[key] == theirs[key], key
