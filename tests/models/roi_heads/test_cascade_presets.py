"""cascade_rcnn_r50.toml and cascade_mask_rcnn_r50.toml resolve to MMDetection 3.3's
cascade-rcnn_r50_fpn_1x_coco and cascade-mask-rcnn_r50_fpn_1x_coco models, value for value: the
reference is MMDetection's own config file resolved through its _base_ chain
(tests/fixtures/mmdet/cascade_rcnn_r50_fpn_1x_coco.json and
cascade_mask_rcnn_r50_fpn_1x_coco.json, written by tools/mmdet_fixtures/cascade_rcnn.py and
cascade_mask_rcnn.py), every key it sets compared with det's resolved preset. The tiny
synthetic presets keep the cascade's structure (stages, IoUs, coders) and its mask branch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detcli.config.diff import flatten
from detcli.config.loader import load_config

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "mmdet"
REFERENCE = FIXTURES / "cascade_rcnn_r50_fpn_1x_coco.json"
MASK_REFERENCE = FIXTURES / "cascade_mask_rcnn_r50_fpn_1x_coco.json"


def resolved_model(preset: str) -> dict:
    return flatten({"model": load_config(preset, []).resolved()["model"]})


def mismatches(reference: Path, preset: str) -> dict:
    """Every key MMDetection's resolved model sets whose value det's preset does not have."""
    expected = flatten({"model": json.loads(reference.read_text())})
    ours = resolved_model(preset)
    assert len(expected) > 150  # the whole model section, stages and train_cfg lists included
    return {k: (v, ours.get(k, "<missing>")) for k, v in expected.items()
            if ours.get(k) != pytest.approx(v)}


def box_part(resolved: dict) -> dict:
    """The keys outside the mask branch (not ``mask_*``, and the losses' ``use_mask``)."""
    return {k: v for k, v in resolved.items()
            if ".mask_" not in k and not k.endswith(".use_mask")}


def test_cascade_rcnn_r50_matches_mmdetection_value_for_value():
    assert mismatches(REFERENCE, "cascade_rcnn_r50") == {}
    ours = resolved_model("cascade_rcnn_r50")
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


def test_cascade_mask_rcnn_r50_matches_mmdetection_value_for_value():
    assert mismatches(MASK_REFERENCE, "cascade_mask_rcnn_r50") == {}
    ours = resolved_model("cascade_mask_rcnn_r50")
    # the mask branch MMDetection adds, in det's resolved preset
    assert [ours[f"model.train_cfg.rcnn[{t}].mask_size"] for t in range(3)] == [28, 28, 28]
    assert ours["model.test_cfg.rcnn.mask_thr_binary"] == 0.5
    assert ours["model.roi_head.mask_head.in_channels"] == 256  # derived from the neck
    # the box model is cascade_rcnn_r50's, key for key
    assert box_part(ours) == box_part(resolved_model("cascade_rcnn_r50"))


def test_the_tiny_mask_preset_is_the_tiny_cascade_with_masks():
    tiny, box = resolved_model("cascade_mask_rcnn_tiny_synth"), resolved_model(
        "cascade_rcnn_tiny_synth")
    assert box_part(tiny) == box_part(box)
    assert tiny["model.roi_head.mask_head.num_classes"] == 3
    assert tiny["model.roi_head.mask_head.conv_out_channels"] == 64
    assert tiny["model.roi_head.mask_head.in_channels"] == 64  # the tiny neck's
    loaded = load_config("cascade_mask_rcnn_tiny_synth", [])
    assert loaded.cfg.evaluation.metric == ["bbox", "segm"]
