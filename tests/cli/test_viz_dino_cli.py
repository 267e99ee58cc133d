"""`det viz assign` on DINO through typer's CliRunner: its denoising queries per GT (the
layout of dino_tiny_synth's 10 groups for two GT boxes), the attention-mask counts, the
seeded, reproducible JSON, the --dn-groups table and picture, and --dn-groups elsewhere."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from detcli.cli.viz import app
from detcli.config.loader import load_config
from tests.analysis.tiny_data import make_tiny, save_tiny_model, with_preset

GT_A = [[20.0, 40.0, 80.0, 100.0], [120.0, 20.0, 200.0, 160.0]]  # a.png's, in the input


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return with_preset(make_tiny(tmp_path_factory.mktemp("dino")), "dino_tiny_synth")


def test_denoising_json_layout_mask_and_picture(tiny, tmp_path):
    out = tmp_path / "dn.png"
    args = ("assign", tiny.image_a, "-c", tiny.config, "--ann", tiny.ann_file, "--out", out,
            "--json")
    result = run(*args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    dn = data["denoising"]
    # num_dn_queries 20, G = 2: P = 10 groups of 2G = 4 queries, D = 40, before Q = 30
    assert (dn["num_groups"], dn["num_gts"], dn["num_queries"], dn["num_matching_queries"]) \
        == (10, 2, 40, 30)
    gts = dn["gts"]
    # group p holds 4p (GT0 +), 4p + 1 (GT1 +), 4p + 2 (GT0 -), 4p + 3 (GT1 -)
    for g, gt in enumerate(gts):
        assert gt["positive"] == list(range(g, 40, 4))
        assert gt["negative"] == list(range(2 + g, 40, 4))
    assert dn["predictions"]["source"] == "stand_in"
    assert dn["predictions"]["text"].startswith("stand-in denoising predictions (no --checkpoint)")
    # 70 x 70: own groups 10 x 4 x 4 = 160, denoising -> matching 40 x 30, matching 30 x 30
    assert dn["attention_mask"] == {"size": 70, "masked": 4900 - 160 - 1200 - 900,
                                    "matching_sees_denoising": 0,
                                    "denoising_sees_other_groups": 0,
                                    "denoising_sees_own_group": 160,
                                    "denoising_sees_matching": 1200,
                                    "matching_sees_matching": 900}
    for g, gt in enumerate(gts):
        assert [q["group"] for q in gt["queries"]] == [p for p in range(10) for _ in (0, 1)]
        for q in gt["queries"]:
            assert sorted(q) == ["box", "group", "index", "iou", "label", "label_flipped",
                                 "noise", "pred_box", "pred_iou", "pred_score", "role"]
            assert q["role"] == ("positive" if q["index"] in gt["positive"] else "negative")
            assert (0.5 <= q["noise"] < 1) if q["role"] == "negative" else (q["noise"] < 0.5)
            assert q["label_flipped"] == (q["label"] != data["gts"][g]["label"])
    assert [g["box"] for g in data["gts"]] == GT_A
    # the noise is seeded: the same run gives the same JSON
    again = json.loads(run(*args).stdout)
    assert again["denoising"] == dn
    # two panels (matching, denoising) of 256 x 192 side by side
    picture = cv2.imread(str(out))
    assert list(picture.shape[:2]) == data["picture_shape"]
    assert picture.shape[1] == 2 * (256 + 4) + 4


def test_denoising_table_of_one_group(tiny, tmp_path):
    result = run("assign", tiny.image_a, "-c", tiny.config, "--ann", tiny.ann_file,
                 "--out", tmp_path / "dn.png", "--dn-groups", "1")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    start = lines.index("\t".join(["gt", "group", "role", "query", "noise", "iou", "label",
                                   "label_flipped", "pred_iou", "pred_score"]))
    rows = [line.split("\t") for line in lines[start + 1:start + 5]]
    # group 0: dn0 GT0 +, dn2 GT0 -, dn1 GT1 +, dn3 GT1 -
    assert [r[:4] for r in rows] == [["0", "0", "positive", "dn0"], ["0", "0", "negative", "dn2"],
                                     ["1", "0", "positive", "dn1"], ["1", "0", "negative", "dn3"]]
    assert all(r[-1] == "-" for r in rows)  # no score without a checkpoint
    assert "\t" not in lines[start + 5]
    assert "in group p, query p*4+j is GT j's positive copy, p*4+2+j its negative" in result.stdout
    assert "stand-in denoising predictions (no --checkpoint)" in result.stdout
    assert "1 of 10 groups drawn and tabulated" in result.stdout


SMALL_TEST_PIPELINE = """
[data.test]
pipeline = [
    { type = "LoadImageFromFile" },
    { type = "MultiScaleFlipAug", img_scale = [64, 64], flip = false, transforms = [
        { type = "Resize", keep_ratio = true },
        { type = "RandomFlip" },
        { type = "Normalize", mean = [123.675, 116.28, 103.53], std = [58.395, 57.12, 57.375], to_rgb = true },
        { type = "Pad", size_divisor = 32 },
        { type = "ImageToTensor", keys = ["img"] },
        { type = "Collect", keys = ["img"] },
    ] },
]
"""


@pytest.fixture(scope="module")
def checkpoint(tiny):
    return save_tiny_model(tiny, "dino.pth")


def test_checkpoint_denoising_predictions(tiny, checkpoint, tmp_path):
    """An untrained DINO: its box branches end in zeros, so each denoising query predicts its
    own noised reference box; the noise is the stand-in run's (same --seed). b.png (one GT:
    20 groups) resized to 64 x 32, so the two runs of the model stay quick."""
    small = tmp_path / "small.toml"
    small.write_text(f'extends = ["{tiny.config}"]\n{SMALL_TEST_PIPELINE}')
    args = ("assign", tiny.image_b, "-c", small, "--ann", tiny.ann_file, "--json")
    result = run(*args, "--checkpoint", checkpoint, "--out", tmp_path / "ck.png")
    assert result.exit_code == 0, result.output
    dn = json.loads(result.stdout)["denoising"]
    assert (dn["predictions"]["source"], dn["num_groups"], dn["num_queries"]) == \
        ("checkpoint", 20, 40)
    assert dn["predictions"]["text"].startswith(f"denoising predictions of {checkpoint}")
    stand_in = json.loads(run(*args, "--out", tmp_path / "si.png").stdout)["denoising"]
    for gt, other in zip(dn["gts"], stand_in["gts"]):
        assert [q["box"] for q in gt["queries"]] == [q["box"] for q in other["queries"]]
        for q in gt["queries"]:
            assert np.allclose(q["pred_box"], q["box"], atol=1e-2)
            assert 0 < q["pred_score"] < 1


def test_dn_groups_without_denoising_exits_1(tiny, tmp_path):
    detr = tiny.root / "detr_tiny_data.toml"
    detr.write_text(tiny.config.read_text().replace("dino_tiny_synth.toml", "detr_tiny_synth.toml"))
    dense = tiny.root / "retina.toml"
    dense.write_text(tiny.config.read_text().replace("dino_tiny_synth.toml",
                                                     "retinanet_tiny_synth.toml"))
    for config, message in ((detr, "DETR has no denoising queries; --dn-groups applies to DINO"),
                            (dense, "which has no denoising queries; --dn-groups applies to DINO")):
        result = run("assign", tiny.image_a, "-c", config, "--box", "1,2,30,40", "--dn-groups",
                     "2", "--out", tmp_path / "x.png")
        assert result.exit_code == 1, result.output
        assert message in " ".join(result.output.split())
        assert not (tmp_path / "x.png").exists()


def test_terminal_tables_per_gt(tiny, monkeypatch):
    from rich.console import Console

    from detcli.analysis.assign_view import OriginalGT
    from detcli.analysis.query_matching import visualize_query_matching
    from detcli.cli import viz_denoising

    gt = OriginalGT.from_boxes([[10, 20, 40, 50], [60, 10, 100, 80]], [0, 1],
                               ("square", "circle", "triangle"))
    matching = visualize_query_matching(load_config(tiny.config).cfg, tiny.image_a, gt)
    console = Console(force_terminal=True, width=120, color_system=None, record=True)
    monkeypatch.setattr(viz_denoising, "console", console)
    viz_denoising.print_denoising(matching, 1)
    text = console.export_text()
    assert "#0 square: denoising queries of group 0 (of 10); pred: stand-in predictions" in text
    assert "#1 circle: denoising queries of group 0 (of 10)" in text
    rows = [line.split() for line in text.splitlines() if " dn" in line]
    # group 0 of each GT: its positive, then its negative copy
    assert [(r[1], r[2]) for r in rows] == [("positive", "dn0"), ("negative", "dn2"),
                                            ("positive", "dn1"), ("negative", "dn3")]
