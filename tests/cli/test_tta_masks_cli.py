"""`det test --tta` on a (tiny, untrained) Mask R-CNN scores masks: the TTA run reports
segm_mAP beside bbox_mAP, and every result written with ``--out`` has its RLE segmentation."""

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
CLASSES = ["square", "circle", "triangle"]


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_det_test_tta_reports_segm_map_and_writes_the_masks(tmp_path):
    synth = make_synthetic_dataset(tmp_path / "synth", num_train=0, num_val=2, image_size=64,
                                   seed=3)
    splits = "".join(
        f'[data.{split}]\nann_file = "{synth.ann_file("val")}"\n'
        f'img_prefix = "{synth.img_prefix("val")}/"\n' for split in ("train", "val", "test"))
    config = tmp_path / "tiny.toml"
    config.write_text(
        f'extends = ["{TINY}"]\n'
        "[model.backbone]\nbase_channels = 8\n[model.neck]\nout_channels = 16\n"
        "[model.rpn_head]\nfeat_channels = 16\n[model.roi_head.bbox_head]\nfc_out_channels = 32\n"
        "[model.roi_head.mask_head]\nconv_out_channels = 16\n"
        "[model.test_cfg.rpn]\nmax_per_img = 50\n[model.test_cfg.rcnn]\nmax_per_img = 10\n"
        "[data]\nsamples_per_gpu = 2\nworkers_per_gpu = 0\n" + splits)
    torch.manual_seed(0)
    model = build_detector(load_config(config, []).cfg.model)
    checkpoint = save_checkpoint(tmp_path / "untrained.pth", model, meta={"classes": CLASSES},
                                 rng=False)
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
