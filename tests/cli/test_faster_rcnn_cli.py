"""Faster R-CNN through the CLI: `det train` one epoch of the tiny preset, then `det test`
(with and without --tta) and `det predict` on its checkpoint; a checkpoint of another class
count names the two-stage key; `det config show --resolved` marks the derived channels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from detcli.cli.main import app
from detcli.config.loader import load_config
from detcli.data.synth import make_synthetic_dataset
from detcli.engine.checkpoint import save_checkpoint
from detcli.models.build import build_detector

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "presets" / "faster_rcnn_tiny_synth.toml"
CLASSES = ["square", "circle", "triangle"]


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(config, checkpoint after one epoch, synthetic dataset)."""
    root = tmp_path_factory.mktemp("faster_rcnn_cli")
    synth = make_synthetic_dataset(root / "synth", num_train=4, num_val=2, image_size=96, seed=3)
    config = root / "tiny.toml"
    splits = "".join(
        f'[data.{split}]\nann_file = "{synth.ann_file(src)}"\nimg_prefix = "{synth.img_prefix(src)}/"\n'
        for split, src in (("train", "train"), ("val", "val"), ("test", "val")))
    config.write_text(
        f'extends = ["{TINY}"]\n'
        "[model.backbone]\nbase_channels = 8\n[model.neck]\nout_channels = 16\n"
        "[model.rpn_head]\nfeat_channels = 16\n[model.roi_head.bbox_head]\nfc_out_channels = 32\n"
        "[data]\nsamples_per_gpu = 2\nworkers_per_gpu = 0\n" + splits +
        "[runner]\nmax_epochs = 1\n[evaluation]\ninterval = 1\n[log_config]\ninterval = 1\n")
    work = root / "work"
    result = run("train", config, "--work-dir", work, "--device", "cpu")
    assert result.exit_code == 0, result.output
    return config, work / "latest.pth", synth


def test_train_writes_a_checkpoint_and_logs_both_stages(trained):
    config, checkpoint, _ = trained
    assert checkpoint.exists()
    log = (checkpoint.parent / "metrics.jsonl").read_text().splitlines()
    train = [json.loads(line) for line in log if '"mode": "train"' in line]
    assert {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox", "acc"} <= set(train[0])


def test_test_and_tta_run_on_the_checkpoint(trained):
    config, checkpoint, _ = trained
    result = run("test", config, checkpoint, "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["num_images"] == 2 and "bbox_mAP" in report["metrics"]
    result = run("test", config, checkpoint, "--json", "--tta", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "bbox_mAP" in json.loads(result.stdout)["metrics_tta"]


def test_predict_writes_records_for_every_image(trained, tmp_path):
    config, checkpoint, synth = trained
    with torch.no_grad():  # make sure there is something to write: every class scores
        model = build_detector(load_config(config).cfg.model)
        model.rpn_head.rpn_cls.bias.fill_(2.0)
        model.roi_head.bbox_head.fc_cls.bias.copy_(torch.tensor([1.0, 1.0, 1.0, 0.0]))
    detecting = save_checkpoint(tmp_path / "detecting.pth", model, meta={"classes": CLASSES},
                                rng=False)
    out = tmp_path / "out"
    images = Path(synth.img_prefix("val"))
    result = run("predict", config, detecting, images, "--out", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    records = json.loads((out / "predictions.json").read_text())
    assert {r["file_name"] for r in records} == {p.name for p in images.iterdir()}
    assert len(records) == 2 * 100  # every proposal scores: max_per_img detections per image
    assert {r["category_name"] for r in records} <= set(CLASSES)


def test_checkpoint_of_another_class_count_names_the_two_stage_key(trained, tmp_path):
    config, _, _ = trained
    two = build_detector(load_config(config, ["model.roi_head.bbox_head.num_classes=2"]).cfg.model)
    bad = save_checkpoint(tmp_path / "two.pth", two, meta={"classes": ["cat", "dog"]}, rng=False)
    result = run("test", config, bad)
    assert result.exit_code == 4
    assert ("trained on 2 classes (cat, dog), but the config has "
            "model.roi_head.bbox_head.num_classes = 3") in result.output


def test_config_show_resolved_marks_derived_channels():
    result = run("config", "show", ROOT / "presets" / "faster_rcnn_r50.toml", "--resolved",
                 "--origin")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    for key in ("in_channels = 256", "out_channels = 256"):
        assert any(line.startswith(key) and "derived" in line for line in lines), key
