"""`det test` end to end through typer's CliRunner: a random tiny RetinaNet checkpoint on a tiny
synthetic dataset; exit codes, tables, results.json, --show-dir pictures, --tta, --json."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
import torch
from typer.testing import CliRunner

from detcli.cli.main import app
from detcli.config.loader import load_config
from detcli.data.synth import make_synthetic_dataset
from detcli.engine.checkpoint import save_checkpoint
from detcli.models.build import build_detector

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "presets" / "retinanet_tiny_synth.toml"
CLASSES = ["square", "circle", "triangle"]
NUM_IMAGES = 2


def run(*args: object):
    return CliRunner().invoke(app, ["test", *map(str, args)])


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(config, checkpoint of the config's model, checkpoint of a 2-class model)."""
    root = tmp_path_factory.mktemp("det_test")
    synth = make_synthetic_dataset(root / "synth", num_train=0, num_val=NUM_IMAGES, image_size=64, seed=4)
    config = root / "tiny.toml"
    config.write_text(
        f'extends = ["{TINY}"]\n'
        "[data]\nworkers_per_gpu = 0\n"
        f'[data.val]\nann_file = "{synth.ann_file("val")}"\nimg_prefix = "{synth.img_prefix("val")}/"\n'
        f'[data.test]\nann_file = "{synth.ann_file("val")}"\nimg_prefix = "{synth.img_prefix("val")}/"\n')
    model_cfg = load_config(config).cfg.model
    torch.manual_seed(0)
    model = build_detector(model_cfg)
    torch.nn.init.zeros_(model.bbox_head.retina_cls.bias)  # scores near 0.5: detections to draw
    good = save_checkpoint(root / "tiny.pth", model, meta={"classes": CLASSES}, rng=False)
    two = build_detector(load_config(config, ["model.bbox_head.num_classes=2"]).cfg.model)
    bad = save_checkpoint(root / "two.pth", two, meta={"classes": ["cat", "dog"]}, rng=False)
    return config, good, bad


def test_tables_results_json_and_pictures(setup, tmp_path):
    config, checkpoint, _ = setup
    out, show = tmp_path / "results.json", tmp_path / "show"
    result = run(config, checkpoint, "--out", out, "--show-dir", show, "--device", "cpu")
    assert result.exit_code == 0, result.output
    for text in ("COCO bbox metrics", "AP @[IoU 0.50:0.95]", "bbox_mAP_75", "bbox_AR@100",
                 "per-class AP", *CLASSES):
        assert text in result.stdout, text

    results = json.loads(out.read_text())
    assert len(results) == NUM_IMAGES * 100  # random weights: max_per_img boxes per image
    assert {r["image_id"] for r in results} == set(range(1, NUM_IMAGES + 1))
    assert set(results[0]) == {"image_id", "category_id", "bbox", "score"}
    assert {r["category_id"] for r in results} <= {1, 2, 3}  # the synthetic file's category ids

    pictures = sorted(p.name for p in show.iterdir())
    assert pictures == [f"{i:06d}.png" for i in range(1, NUM_IMAGES + 1)]
    panel = cv2.imread(str(show / pictures[0]))
    assert panel.shape[1] > 2 * panel.shape[0] * 0.9  # prediction and GT side by side


def test_tta_json_compares_both_and_falls_back_to_val(setup):
    config, checkpoint, _ = setup
    result = run(config, checkpoint, "--tta", "--json", "--set", "data.test=false")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["split"] == "val" and report["num_images"] == NUM_IMAGES
    for key in ("metrics", "metrics_tta"):
        assert set(report[key]) >= {"bbox_mAP", "bbox_mAP_50", "bbox_AR@100", "per_class"}
        assert [c["class"] for c in report[key]["per_class"]] == CLASSES
    assert "--tta adds flip = true" in result.stderr


def test_checkpoint_of_another_class_count_exits_4_naming_both(setup):
    config, _, two_classes = setup
    result = run(config, two_classes)
    assert result.exit_code == 4
    assert "does not fit the model built from the config" in result.output
    assert "trained on 2 classes (cat, dog), but the config has model.bbox_head.num_classes = 3" \
        in result.output


def test_missing_split_is_a_config_error(setup):
    config, checkpoint, _ = setup
    result = run(config, checkpoint, "--split", "test", "--set", "data.test=false")
    assert result.exit_code == 2
    assert "the config has no data.test to test on" in result.output
