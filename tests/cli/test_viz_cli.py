"""`det viz assign` and `det viz dataset` through typer's CliRunner: files, output, exit codes."""

from __future__ import annotations

import json

import cv2
import pytest
from typer.testing import CliRunner

from detcli.cli.main import app as main_app
from detcli.cli.viz import app
from tests.analysis.tiny_data import make_tiny


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def tiny(tmp_path):
    return make_tiny(tmp_path)


def test_det_viz_is_wired_into_the_main_app():
    result = CliRunner().invoke(main_app, ["viz", "--help"])
    assert result.exit_code == 0 and "assign" in result.output and "dataset" in result.output


def test_assign_writes_the_picture_and_prints_the_table(tiny, tmp_path):
    out = tmp_path / "pics" / "a.png"
    result = run("assign", tiny.image_a, "--config", tiny.config, "--box", "10,20,40,50,square",
                 "--box", "60,10,100,80,1", "--out", out)
    assert result.exit_code == 0, result.output
    # 6 panels of 256 x 192 in 3 columns + a 2-line legend (see test_viz_assign)
    assert cv2.imread(str(out)).shape == (472, 784, 3)
    lines = result.stdout.splitlines()
    assert lines[0].split("\t")[:5] == ["#", "class", "w_x_h", "best_iou", "best_level"]
    assert lines[1].split("\t")[:3] == ["0", "square", "60x60"]
    assert lines[2].split("\t")[:3] == ["1", "circle", "80x140"]
    assert f"wrote {out} (784x472)" in result.stdout


def test_assign_json_flags_zero_positive_gts(tiny, tmp_path):
    result = run("assign", tiny.image_a, "-c", tiny.config, "--box", "10,20,40,50",
                 "--box", "100,70,102,72", "--set", "model.train_cfg.assigner.min_pos_iou=0.3",
                 "--levels", "0", "--show-negatives", "--out", tmp_path / "z.png", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["zero_positive_gts"] == [1]
    assert [g["zero_positives"] for g in data["gts"]] == [False, True]
    assert data["picture_shape"] == [218 + 72 + 4, 524]  # 2 panels, 4 legend lines
    assert sum(r["positive"] for r in data["levels"]) == data["counts"]["positive"] > 0
    assert data["input_shape"] == [192, 256]


def test_assign_plain_table_marks_a_gt_without_positives(tiny, tmp_path):
    result = run("assign", tiny.image_a, "-c", tiny.config, "--box", "100,70,102,72",
                 "--set", "model.train_cfg.assigner.min_pos_iou=0.3", "--out", tmp_path / "z.png")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].endswith("\t0\tNO POSITIVES")
    assert "1 GT box with no positive prior: #0" in result.stdout


def test_assign_with_ann_matches_by_file_name(tiny, tmp_path):
    result = run("assign", tiny.image_b, "-c", tiny.config, "--ann", tiny.ann_file,
                 "--out", tmp_path / "b.png", "--json")
    assert result.exit_code == 0, result.output
    gts = json.loads(result.stdout)["gts"]
    assert [(g["class"], g["box"]) for g in gts] == [("triangle", [25.6, 12.8, 76.8, 64.0])]


@pytest.mark.parametrize("args, code, message", [
    (["--box", "1,2,3"], 3, "--box '1,2,3': expected x1,y1,x2,y2[,label]"),
    (["--box", "1,2,3,4,hexagon"], 3, "label 'hexagon' is not a class name; classes: square, circle, triangle"),
    (["--levels", "0,7"], 1, "--levels '0,7': no level 7; the anchor generator has 5 levels (0 to 4)"),
    (["--levels", "x"], 1, "expected comma-separated level numbers"),
    ([], 1, "no GT boxes: give --ann COCO_JSON or --box"),
])
def test_assign_bad_options_exit_with_a_message_and_no_traceback(tiny, tmp_path, args, code, message):
    if "--levels" in args:
        args = [*args, "--box", "1,2,30,40"]
    result = run("assign", tiny.image_a, "-c", tiny.config, "--out", tmp_path / "x.png", *args)
    assert result.exit_code == code, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not (tmp_path / "x.png").exists()


def test_assign_unreadable_image_and_missing_ann_entry_exit_3(tiny, tmp_path):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8 this is no JPEG")
    result = run("assign", junk, "-c", tiny.config, "--box", "1,2,3,4")
    assert result.exit_code == 3
    assert "junk.jpg" in result.output and "Traceback" not in result.output
    result = run("assign", junk, "-c", tiny.config, "--ann", tiny.ann_file)
    assert result.exit_code == 3
    assert "has no image named 'junk.jpg'" in " ".join(result.output.split())


def test_dataset_writes_n_images_whose_boxes_follow_a_flip(tiny, tmp_path):
    out = tmp_path / "samples"
    result = run("dataset", tiny.config, "--num", 2, "--out", out, "--json",
                 "--set", "data.train.pipeline.3.flip_ratio=1.0")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["000_a.png", "001_b.png"]
    images = json.loads(result.stdout)["images"]
    assert [im["flip_direction"] for im in images] == ["horizontal", "horizontal"]
    # b.png is 100 x 50, resized by 2.56 to 256 x 128: the triangle [10, 5, 30, 25] becomes
    # [25.6, 12.8, 76.8, 64.0] and, mirrored in a 256-pixel width, [179.2, 12.8, 230.4, 64.0]
    assert images[1]["boxes"] == [[179.2, 12.8, 230.4, 64.0]]
    assert images[1]["picture"] == str(out / "001_b.png")


def test_dataset_grid_and_text_output(tiny, tmp_path):
    result = run("dataset", tiny.config, "--split", "val", "--out", tmp_path / "g", "--grid")
    assert result.exit_code == 0, result.output
    assert "a.png 256x192: 2 boxes" in result.stdout
    assert f"wrote {tmp_path / 'g' / 'grid.png'}" in result.stdout


def test_dataset_bad_num_exits_1(tiny, tmp_path):
    result = run("dataset", tiny.config, "--num", 0, "--out", tmp_path / "g")
    assert result.exit_code == 1
    assert "--num must be at least 1, got 0" in result.output
