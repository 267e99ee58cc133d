"""`det data synth` and `det data check` through typer's CliRunner: output and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from detcli.cli.data import app
from detcli.data.synth import make_synthetic_dataset

ROOT = Path(__file__).resolve().parents[2]
R50 = ROOT / "presets" / "retinanet_r50.toml"


def run(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def write_config(tmp_path: Path, train_ann: Path, train_prefix: Path, val_ann: Path, val_prefix: Path) -> Path:
    path = tmp_path / "cfg.toml"
    path.write_text(
        f'extends = ["{R50}"]\n'
        f'[data.train]\nann_file = "{train_ann}"\nimg_prefix = "{train_prefix}"\n'
        f'[data.val]\nann_file = "{val_ann}"\nimg_prefix = "{val_prefix}"\n'
        f'[data.test]\nann_file = "{val_ann}"\nimg_prefix = "{val_prefix}"\n')
    return path


def test_synth_writes_a_dataset_and_prints_a_config_snippet(tmp_path):
    result = run("synth", tmp_path / "s", "--num-train", 4, "--num-val", 2, "--image-size", 96, "--seed", 5)
    assert result.exit_code == 0, result.output
    assert f'ann_file = "{tmp_path / "s" / "annotations" / "train.json"}"' in result.stdout
    assert len(list((tmp_path / "s" / "train").iterdir())) == 4
    assert json.loads((tmp_path / "s" / "synth.json").read_text())["seed"] == 5


def test_synth_bad_size_is_a_data_error(tmp_path):
    result = run("synth", tmp_path / "s", "--image-size", 20)
    assert result.exit_code == 3
    assert "image_size must be between 64 and 4096 pixels, got 20" in result.output


def test_check_clean_dataset_exits_0(tmp_path):
    synth = make_synthetic_dataset(tmp_path / "s", num_train=4, num_val=2, image_size=96)
    cfg = write_config(tmp_path, synth.ann_file("train"), synth.img_prefix("train"),
                       synth.ann_file("val"), synth.img_prefix("val"))
    result = run("check", cfg)
    assert result.exit_code == 0, result.output
    assert "clean (train: 0 errors; val: 0 errors)" in result.stdout
    assert "test: the same dataset as val, not checked twice" in result.stdout


def test_check_broken_dataset_exits_1_and_lists_each_problem(tmp_path):
    synth = make_synthetic_dataset(tmp_path / "s", num_train=4, num_val=2, image_size=96)
    val_dir = synth.img_prefix("val")
    cut = (val_dir / "000001.jpg").read_bytes()
    (val_dir / "000001.jpg").write_bytes(cut[: len(cut) // 2])  # truncated
    (val_dir / "000002.jpg").unlink()  # missing
    cfg = write_config(tmp_path, synth.ann_file("train"), synth.img_prefix("train"),
                       synth.ann_file("val"), val_dir)
    result = run("check", cfg, "--split", "val", "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is False and [r["split"] for r in report["reports"]] == ["val"]
    problems = {p["kind"]: p["file"] for p in report["reports"][0]["problems"]}
    assert problems == {"truncated_image": str(val_dir / "000001.jpg"),
                        "missing_file": str(val_dir / "000002.jpg")}
    result = run("check", cfg, "--split", "val")
    assert result.exit_code == 1
    assert "problems found (val: 2 errors)" in result.stdout
    assert "truncated_image" in result.stdout and "missing_file" in result.stdout
    assert run("check", cfg, "--split", "val", "--cheap").exit_code == 1  # the missing file


def test_check_override_and_unloadable_annotation_file(tmp_path):
    synth = make_synthetic_dataset(tmp_path / "s", num_train=2, num_val=1, image_size=96)
    cfg = write_config(tmp_path, synth.ann_file("train"), synth.img_prefix("train"),
                       synth.ann_file("val"), synth.img_prefix("val"))
    result = run("check", cfg, "--split", "train", "--set", f'data.train.ann_file="{tmp_path}/no.json"')
    assert result.exit_code == 1
    assert f"error   bad_annotation     {tmp_path}/no.json: annotation file {tmp_path}/no.json does not exist" \
        in result.stdout


def test_check_config_errors_keep_their_exit_code(tmp_path):
    result = run("check", tmp_path / "missing.toml")
    assert result.exit_code == 2 and "does not exist" in result.output


def test_a_dataset_without_a_box_is_not_clean(tmp_path):
    synth = make_synthetic_dataset(tmp_path / "s", num_train=3, num_val=1, image_size=96)
    data = json.loads(synth.ann_file("train").read_text())
    data["annotations"] = []
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps(data))
    cfg = write_config(tmp_path, empty, synth.img_prefix("train"), synth.ann_file("val"),
                       synth.img_prefix("val"))
    result = run("check", cfg, "--split", "train")
    assert result.exit_code == 1, result.output
    assert "1 problem in train:" in result.stdout  # one, not "1 problems"
    assert "problems found (train: 1 error)" in result.stdout
    assert (f"error   no_boxes           {empty}: the dataset has no GT boxes: none of its 3 images "
            "has a box; there is nothing to train on or to evaluate.") in result.stdout


def test_synth_into_a_regular_file_is_one_message_with_exit_5(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("not a folder\n")
    result = run("synth", readme, "--num-train", 1, "--num-val", 1, "--image-size", 64)
    assert result.exit_code == 5, result.output
    assert (f"cannot write to the dataset folder {readme / 'train'}: {readme} is a file, not a "
            "folder") in result.output
    assert "Traceback" not in result.output and readme.read_text() == "not a folder\n"
