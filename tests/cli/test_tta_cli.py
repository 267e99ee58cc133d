"""`det test --tta` on tiny untrained detectors: a Mask R-CNN's TTA run reports segm_mAP beside
bbox_mAP and every result written with ``--out`` has its RLE segmentation; a DETR, which has no
NMS, is merged with the ``[tta]`` NMS, says so, and ``tta.max_per_img`` caps the merge
(numbers: tests/engine/test_tta_query.py)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from detcli.cli.main import app
from detcli.config.loader import load_config
from detcli.data.synth import make_synthetic_dataset
from detcli.engine.checkpoint import save_checkpoint
from detcli.models.build import build_detector

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "presets" / "mask_rcnn_tiny_synth.toml"
DETR = ROOT / "presets" / "detr_tiny_synth.toml"
CLASSES = ["square", "circle", "triangle"]


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def splits(tmp_path: Path) -> str:
    """[data.*] sections on two synthetic 64 x 64 images."""
    synth = make_synthetic_dataset(tmp_path / "synth", num_train=0, num_val=2, image_size=64,
                                   seed=3)
    return "".join(
        f'[data.{split}]\nann_file = "{synth.ann_file("val")}"\n'
        f'img_prefix = "{synth.img_prefix("val")}/"\n' for split in ("train", "val", "test"))


def untrained_checkpoint(config: Path, tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = build_detector(load_config(config, []).cfg.model)
    return save_checkpoint(tmp_path / "untrained.pth", model, meta={"classes": CLASSES}, rng=False)


def test_det_test_tta_reports_segm_map_and_writes_the_masks(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(
        f'extends = ["{TINY}"]\n'
        "[model.backbone]\nbase_channels = 8\n[model.neck]\nout_channels = 16\n"
        "[model.rpn_head]\nfeat_channels = 16\n[model.roi_head.bbox_head]\nfc_out_channels = 32\n"
        "[model.roi_head.mask_head]\nconv_out_channels = 16\n"
        "[model.test_cfg.rpn]\nmax_per_img = 50\n[model.test_cfg.rcnn]\nmax_per_img = 10\n"
        "[data]\nsamples_per_gpu = 2\nworkers_per_gpu = 0\n" + splits(tmp_path))
    checkpoint = untrained_checkpoint(config, tmp_path)
    out = tmp_path / "results.json"
    result = run("test", config, checkpoint, "--tta", "--json", "--device", "cpu", "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for key in ("metrics", "metrics_tta"):
        assert 0 <= report[key]["segm_mAP"] <= 1 and 0 <= report[key]["bbox_mAP"] <= 1
    results = json.loads(out.read_text())  # the TTA detections
    assert len(results) == 2 * 10  # two images, each the merge's max_per_img (untrained: many)
    assert all(set(r["segmentation"]) == {"size", "counts"} for r in results)
    assert all(r["segmentation"]["size"] == [64, 64] for r in results)


def test_det_test_tta_merges_detr_with_the_tta_nms_and_says_so(tmp_path):
    config = tmp_path / "detr.toml"
    config.write_text(f'extends = ["{DETR}"]\n'
                      "[data]\nsamples_per_gpu = 2\nworkers_per_gpu = 0\n" + splits(tmp_path) +
                      "[tta]\nmax_per_img = 1\n")
    checkpoint = untrained_checkpoint(config, tmp_path)
    out = tmp_path / "results.json"
    result = run("test", config, checkpoint, "--tta", "--json", "--device", "cpu", "--out", out)
    assert result.exit_code == 0, result.output
    assert "DETR keeps its top-k queries without NMS; --tta merges the views with tta.nms" \
        in " ".join(result.stderr.split())
    report = json.loads(result.stdout)
    assert 0 <= report["metrics_tta"]["bbox_mAP"] <= 1
    results = json.loads(out.read_text())  # the TTA detections: tta.max_per_img per image
    assert sorted(r["image_id"] for r in results) == [1, 2]
