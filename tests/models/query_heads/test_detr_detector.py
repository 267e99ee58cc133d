"""The DETR detector's config checks and what does not apply to it."""

from __future__ import annotations

import pytest
import torch

from detcli.config.loader import load_config
from detcli.engine.tta import merge_views
from detcli.errors import ConfigError
from detcli.models.build import build_detector
from detcli.structures.batch import ImageBatch


def tiny_model_cfg(**changes) -> dict:
    cfg = load_config("detr_tiny_synth", []).cfg.model.model_dump()
    cfg["bbox_head"].pop("embed_dims")  # derived again from the decoder
    cfg["neck"].pop("in_channels")
    cfg.update(changes)
    return cfg


def test_the_head_width_is_derived_from_the_decoder():
    model = build_detector(tiny_model_cfg())
    assert model.bbox_head.embed_dims == 64 == model.query_embedding.weight.shape[1]


def test_widths_that_disagree_are_named():
    cfg = tiny_model_cfg(positional_encoding={"type": "SinePositionalEncoding", "num_feats": 16})
    with pytest.raises(ConfigError) as err:
        build_detector(cfg)
    text = str(err.value)
    assert "DETR's widths must agree" in text
    assert "model.positional_encoding (2 x num_feats 16) = 32" in text
    assert "model.encoder (self_attn_cfg.embed_dims) = 64" in text


def test_predict_gives_max_per_img_detections_per_image():
    model = build_detector(tiny_model_cfg()).eval()
    images = ImageBatch(tensor=torch.randn(2, 3, 64, 96), img_shapes=[(64, 96), (48, 64)],
                        ori_shapes=[(64, 96), (48, 64)], scale_factors=torch.ones(2, 4))
    dets = model.predict(images)
    assert [len(d) for d in dets] == [20, 20]
    assert float(dets[1].boxes[:, 0::2].max()) <= 64 and float(dets[1].boxes[:, 1::2].max()) <= 48
    assert all(bool((d.scores[:-1] >= d.scores[1:]).all()) for d in dets)


def test_test_time_augmentation_merges_with_mmdetections_tta_nms():
    """DETR has no NMS of its own: --tta merges with tta.nms's default (tests/engine/
    test_tta_query.py has the numbers)."""
    model = build_detector(tiny_model_cfg()).eval()
    images = ImageBatch.from_tensor(torch.randn(1, 3, 64, 64))
    with torch.inference_mode():
        merged = merge_views(model, [images])[0]
    assert 0 < len(merged) <= 100
