"""`det init` through typer's CliRunner: COCO, VOC and YOLO folders made from `det data synth`,
the config it writes, and a 1-epoch `det train` on it from another directory."""

from __future__ import annotations

import json
import tomllib

import pytest
import torch
from typer.testing import CliRunner

from detcli.cli.main import app
from tests.data.layouts import synth, to_voc, to_yolo

TINY = ["--set", "runner.max_epochs=1", "--set", "model.backbone.base_channels=8",
        "--set", "model.neck.out_channels=32", "--set", "model.bbox_head.feat_channels=32",
        "--set", "model.bbox_head.stacked_convs=1", "--set", "data.workers_per_gpu=0"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return synth(tmp_path_factory.mktemp("init-cli") / "shapes")


@pytest.fixture
def run():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield lambda *args, input=None: CliRunner().invoke(app, [str(a) for a in args], input=input)
    torch.set_num_threads(threads)


def _train(run, config, tmp_path, monkeypatch):
    """One epoch of the written config, run from a directory that is neither the data's nor the
    config's (the paths are absolute)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = run("train", config, "--work-dir", tmp_path / "wd", "--device", "cpu", *TINY)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "wd" / "epoch_1.pth").exists()
    return result


def test_coco_yes_writes_a_config_that_trains(run, shapes, tmp_path, monkeypatch):
    out = tmp_path / "coco.toml"
    result = run("init", shapes.root, "--yes", "--out", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "COCO layout (CocoDataset)" in result.stdout
    assert "suggested preset: retinanet_tiny_synth: no GPU here" in result.stdout
    assert "the anchors fit the data" in result.stdout
    assert result.stdout.rstrip().endswith(f"det train {out}")
    cfg = tomllib.loads(out.read_text())
    assert cfg["extends"] == "retinanet_tiny_synth"
    assert cfg["model"]["bbox_head"]["num_classes"] == 3
    assert cfg["data"]["train"] == {"type": "CocoDataset", "ann_file": str(shapes.ann_file("train")),
                                    "img_prefix": str(shapes.img_prefix("train")),
                                    "classes": ["square", "circle", "triangle"]}
    assert cfg["data"]["test"]["ann_file"] == str(shapes.ann_file("val"))
    assert "COCO bbox metrics" in _train(run, out, tmp_path, monkeypatch).stdout


def test_voc_yes_trains(run, shapes, tmp_path, monkeypatch):
    voc = to_voc(shapes, tmp_path / "voc")
    out = tmp_path / "voc.toml"
    result = run("init", voc, "--yes", "--out", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    cfg = tomllib.loads(out.read_text())
    assert cfg["data"]["val"]["ann_file"] == str(voc / "ImageSets" / "Main" / "val.txt")
    assert cfg["data"]["train"]["classes"] == ["circle", "square", "triangle"]
    assert cfg["data"]["train"]["pipeline"][0] == {"type": "LoadImageFromFile"}  # the preset's
    _train(run, out, tmp_path, monkeypatch)


def test_yolo_without_names_or_val_split_trains(run, shapes, tmp_path, monkeypatch):
    yolo = to_yolo(shapes, tmp_path / "yolo", style="flat", names="none")
    out = tmp_path / "yolo.toml"
    result = run("init", yolo, "--yes", "--out", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "the labels use 3 class numbers (0 to 2)" in result.stdout
    cfg = tomllib.loads(out.read_text())
    assert cfg["data"]["train"]["classes"] == ["class_0", "class_1", "class_2"]
    splits = tmp_path / "yolo.splits"
    train = (splits / "train.txt").read_text().split()
    val = (splits / "val.txt").read_text().split()
    assert len(val) == 1 and len(train) == 11  # round(0.1 * 12) of the 12 images
    assert not set(train) & set(val) and len(train) + len(val) == 12
    assert cfg["data"]["val"]["ann_file"] == str(splits / "val.txt")
    assert "val: a 0.1 share of the training images, seed 0" in out.read_text()
    _train(run, out, tmp_path, monkeypatch)


def test_prompts_take_their_answers_from_input(run, shapes, tmp_path, monkeypatch):
    yolo = to_yolo(shapes, tmp_path / "yolo", style="flat", names="none")
    monkeypatch.chdir(tmp_path)
    answers = "a,b,c\n0.25\n\nasked.toml\n"  # names, val share, preset (default), where
    result = run("init", yolo, "--device", "cpu", input=answers)
    assert result.exit_code == 0, result.output
    assert "class names, comma-separated, in label order (class_0,class_1,class_2)" in result.stdout
    assert "3 classes (from your answer)" in result.stdout
    cfg = tomllib.loads((tmp_path / "asked.toml").read_text())
    assert cfg["data"]["train"]["classes"] == ["a", "b", "c"] and cfg["extends"] == "retinanet_tiny_synth"
    assert len((tmp_path / "asked.splits" / "val.txt").read_text().split()) == 3  # 0.25 of 12


def test_flags_answer_every_question(run, shapes, tmp_path):
    yolo = to_yolo(shapes, tmp_path / "yolo", style="flat", names="none")
    out = tmp_path / "flags.toml"
    result = run("init", yolo, "--format", "yolo", "--classes", "sq,ci,tr", "--val-split", "0.5",
                 "--seed", "2", "--preset", "atss_tiny_synth", "--out", out, "--device", "cpu")
    assert result.exit_code == 0, result.output  # no input given: nothing was asked
    cfg = tomllib.loads(out.read_text())
    assert cfg["extends"] == "atss_tiny_synth" and cfg["data"]["val"]["classes"] == ["sq", "ci", "tr"]
    assert len((tmp_path / "flags.splits" / "val.txt").read_text().split()) == 6


def test_mistakes_exit_with_a_message(run, shapes, tmp_path):
    yolo = to_yolo(shapes, tmp_path / "yolo", style="flat", names="none")
    few = run("init", yolo, "--yes", "--classes", "a,b", "--out", tmp_path / "x.toml")
    assert few.exit_code == 3 and "2 class names for labels numbered up to 2" in few.output
    (tmp_path / "taken.toml").write_text("# mine\n")
    taken = run("init", shapes.root, "--yes", "--out", tmp_path / "taken.toml", "--device", "cpu")
    assert taken.exit_code == 2 and "taken.toml exists; det init does not overwrite it" in taken.output
    assert (tmp_path / "taken.toml").read_text() == "# mine\n"
    (tmp_path / "nothing").mkdir()
    none = run("init", tmp_path / "nothing", "--yes")
    assert none.exit_code == 3 and "is not a COCO or VOC or YOLO dataset" in none.output
    bad = run("init", shapes.root, "--yes", "--preset", "retinanet_tiny_synt", "--out", tmp_path / "y.toml",
              "--device", "cpu")
    assert bad.exit_code == 2 and "retinanet_tiny_synth" in bad.output
    for result in (few, taken, none, bad):
        assert "Traceback" not in result.output


def test_problems_from_the_cheap_check_are_shown(run, shapes, tmp_path):
    broken = tmp_path / "broken"
    (broken / "annotations").mkdir(parents=True)
    data = json.loads(shapes.ann_file("train").read_text())
    data["images"].append({"id": 999, "file_name": "gone.jpg", "width": 96, "height": 96})
    (broken / "annotations" / "train.json").write_text(json.dumps(data))
    (broken / "train").symlink_to(shapes.img_prefix("train"))
    result = run("init", broken, "--yes", "--out", tmp_path / "b.toml", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "missing_file" in result.stdout and "gone.jpg" in result.stdout
    assert 'data.on_bad_image = "skip"' in result.stdout
