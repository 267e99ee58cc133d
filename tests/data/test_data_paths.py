"""The data-path rule (detcli/data/paths.py): relative to the config file that sets a path when
it exists there, else to the current directory; absolute paths as they are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detcli.config.loader import load_config
from detcli.data.build import build_dataset
from detcli.errors import DataError

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "presets" / "retinanet_tiny_synth.toml"


def _coco(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 8, "height": 8}],
                                "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    return path


def _config(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'extends = ["{TINY}"]\n{body}')
    return path


def test_a_path_next_to_the_config_wins_from_any_directory(tmp_path, monkeypatch):
    ann = _coco(tmp_path / "proj" / "ann" / "train.json")
    (tmp_path / "proj" / "images").mkdir()
    cfg = _config(tmp_path / "proj" / "my.toml",
                  '[data.train]\nann_file = "ann/train.json"\nimg_prefix = "images/"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    train = load_config(cfg).cfg.data.train
    assert train.ann_file == str(ann)
    assert train.img_prefix == str(tmp_path / "proj" / "images")


def test_a_base_config_keeps_its_own_directory(tmp_path, monkeypatch):
    ann = _coco(tmp_path / "bases" / "data" / "train.json")
    base = _config(tmp_path / "bases" / "data_base.toml", '[data.train]\nann_file = "data/train.json"\n')
    child = tmp_path / "configs" / "child.toml"
    child.parent.mkdir()
    child.write_text(f'extends = ["{base}"]\n')
    monkeypatch.chdir(tmp_path)
    assert load_config(child).cfg.data.train.ann_file == str(ann)


def test_not_next_to_the_config_stays_relative_to_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the presets' data/synth/... paths, as `make demo` uses them
    train = load_config(TINY).cfg.data.train
    assert train.ann_file == "data/synth/annotations/train.json"
    assert train.img_prefix == "data/synth/train/"


def test_set_and_absolute_paths_are_not_rewritten(tmp_path, monkeypatch):
    _coco(tmp_path / "proj" / "x.json")
    cfg = _config(tmp_path / "proj" / "my.toml", f'[data.val]\nann_file = "{tmp_path}/abs.json"\n')
    monkeypatch.chdir(tmp_path)
    loaded = load_config(cfg, ["data.train.ann_file=x.json"])  # --set: the current directory
    assert loaded.cfg.data.train.ann_file == "x.json"
    assert loaded.cfg.data.val.ann_file == f"{tmp_path}/abs.json"


def test_a_missing_relative_file_says_where_it_was_looked_up(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train = load_config(TINY).cfg.data.train
    with pytest.raises(DataError) as err:
        build_dataset(train)
    message = str(err.value)
    assert "annotation file data/synth/annotations/train.json does not exist" in message
    assert f"looked up in the current directory {tmp_path}" in message
    assert "relative to the config file that sets it when it exists there" in message


def test_a_missing_absolute_file_needs_no_note(tmp_path):
    train = load_config(TINY, [f"data.train.ann_file={tmp_path}/none.json"]).cfg.data.train
    with pytest.raises(DataError) as err:
        build_dataset(train)
    assert str(err.value) == f"annotation file {tmp_path}/none.json does not exist"
