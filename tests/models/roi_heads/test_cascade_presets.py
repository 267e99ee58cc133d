"""cascade_rcnn_r50.toml resolves to MMDetection 3.3's cascade-rcnn_r50_fpn_1x_coco model,
value for value: the reference is MMDetection's own config file resolved through its _base_
chain (tests/fixtures/mmdet/cascade_rcnn_r50_fpn_1x_coco.json, written by
tools/mmdet_fixtures/cascade_rcnn.py), every key it sets compared with det's resolved preset.
The tiny synthetic preset keeps the cascade's structure (stages, IoUs, coders)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detcli.config.diff import flatten
from detcli.config.loader import load_config

REFERENCE = Path(__file__).resolve().parents[2] / "fixtures" / "mmdet" / \
    "cascade_rcnn_r50_fpn_1x_coco.json"


def resolved_model(preset: str) -> dict:
    return flatten({"model": load_config(preset, []).resolved()["model"]})


def test_cascade_rcnn_r50_matches_mmdetection_value_for_value():
    expected = flatten({"model": json.loads(REFERENCE.read_text())})
    ours = resolved_model("cascade_rcnn_r50")
    assert len(expected) > 150  # the whole model section, stages and train_cfg lists included
    mismatches = {k: (v, ours.get(k, "<missing>")) for k, v in expected.items()
                  if ours.get(k) != pytest.approx(v)}
    assert mismatches == {}
    # what MMDetection leaves to its defaults, as det's schema fills them
    assert ours["model.roi_head.bbox_roi_extractor.roi_layer.aligned"] is True
    assert ours["model.roi_head.bbox_head[2].reg_decoded_bbox"] is False


def test_the_tiny_preset_keeps_the_cascade():
    tiny, r50 = resolved_model("cascade_rcnn_tiny_synth"), resolved_model("cascade_rcnn_r50")
    for key in ["model.roi_head.num_stages", "model.roi_head.stage_loss_weights"] + [
            f"model.roi_head.bbox_head[{t}].{field}" for t in range(3)
            for field in ("bbox_coder.target_stds", "reg_class_agnostic", "loss_bbox.type")] + [
            f"model.train_cfg.rcnn[{t}].assigner.{field}" for t in range(3)
            for field in ("pos_iou_thr", "neg_iou_thr", "min_pos_iou", "match_low_quality")]:
        assert tiny[key] == r50[key], key
    assert [tiny[f"model.roi_head.bbox_head[{t}].num_classes"] for t in range(3)] == [3, 3, 3]
