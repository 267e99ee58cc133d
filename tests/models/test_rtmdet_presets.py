"""The rtmdet_tiny/s/m/l presets resolve to MMDetection 3.3's rtmdet_*_8xb32-300e_coco models.

tests/fixtures/mmdet/rtmdet_presets.json (tools/mmdet_fixtures/rtmdet_presets.py) holds what
MMDetection builds from its four configs: every state-dict name and shape, the parameter count
(tiny 4.90 M, s 8.89 M, m 24.71 M, l 52.32 M), test_cfg, assigner and optimizer. det's model from
each preset must have the same layout, so MMDetection's RTMDet checkpoints load strictly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detcli.config.loader import load_config
from detcli.models.build import build_detector

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "mmdet" / "rtmdet_presets.json"
PRESETS = json.loads(FIXTURE.read_text())["presets"]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_builds_mmdetections_model(name):
    theirs = PRESETS[name]
    cfg = load_config(name, []).cfg
    model = build_detector(cfg.model)
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == theirs["shapes"]
    assert sum(p.numel() for p in model.parameters()) == theirs["num_parameters"]
    test_cfg = cfg.model.test_cfg
    expected = theirs["test_cfg"]
    assert (test_cfg.nms_pre, test_cfg.min_bbox_size, test_cfg.score_thr, test_cfg.max_per_img) \
        == (expected["nms_pre"], expected["min_bbox_size"], expected["score_thr"],
            expected["max_per_img"])
    assert test_cfg.nms.iou_threshold == expected["nms"]["iou_threshold"] == 0.65
    assert cfg.model.train_cfg.assigner.type == theirs["assigner"]["type"]
    assert cfg.model.train_cfg.assigner.topk == theirs["assigner"]["topk"] == 13
    assert (cfg.optimizer.type, cfg.optimizer.lr, cfg.optimizer.weight_decay) == (
        theirs["optimizer"]["type"], theirs["optimizer"]["lr"],
        theirs["optimizer"]["weight_decay"])
    assert cfg.runner.max_epochs == theirs["max_epochs"] == 300
