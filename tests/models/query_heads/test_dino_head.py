"""DINOHead's denoising targets by hand, DINO's config rules, the box sine embedding, and the
preset dino_4scale_r50 value for value against MMDetection 3.3's config."""

from __future__ import annotations

import math

import pytest
import torch

from detcli.config.loader import load_config
from detcli.errors import ConfigError
from detcli.models.build import build_detector
from detcli.models.query_heads.dino_head import denoising_assignment
from detcli.models.transformer.denoising import DenoisingMeta
from detcli.models.transformer.dino_layers import box_sine_embedding


def test_denoising_assignment_of_two_images_and_two_groups():
    # image 0 has GT slots 0 (class 2) and 1 (class 0); image 1 only slot 0 (class 1)
    labels = torch.tensor([[2, 0], [1, -1]])
    result = denoising_assignment(DenoisingMeta(num_groups=2, num_slots=2), labels)
    # per group: positive copies of slots 0, 1, then negative copies of slots 0, 1
    assert result.gt_index.tolist() == [[0, 1, -1, -1, 0, 1, -1, -1],
                                        [0, -1, -1, -1, 0, -1, -1, -1]]
    assert result.labels.tolist() == [[2, 0, -1, -1, 2, 0, -1, -1],
                                      [1, -1, -1, -1, 1, -1, -1, -1]]
    assert result.num_gts.tolist() == [2, 1]


def test_box_sine_embedding_at_a_known_box():
    # num_feats 2: divisors 1, 1 -> per coordinate (sin(2 pi c), cos(2 pi c)), order cy, cx, w, h
    box = torch.tensor([0.125, 0.25, 0.5, 1.0])  # cx, cy, w, h
    out = box_sine_embedding(box, num_feats=2)
    expected = []
    for c in (0.25, 0.125, 0.5, 1.0):
        expected += [math.sin(2 * math.pi * c), math.cos(2 * math.pi * c)]
    torch.testing.assert_close(out, torch.tensor(expected), atol=1e-6, rtol=0)


def test_dino_refuses_to_turn_its_variants_off():
    cfg = load_config("dino_tiny_synth", []).cfg.model.model_dump()
    for key in ("with_box_refine", "as_two_stage"):
        with pytest.raises((ConfigError, ValueError), match=key):
            build_detector({**cfg, key: False})
    decoder = {**cfg["decoder"], "return_intermediate": False}
    with pytest.raises((ConfigError, ValueError), match="return_intermediate"):
        build_detector({**cfg, "decoder": decoder})


def test_dino_4scale_r50_is_mmdetections_config():
    """dino-4scale_r50_8xb2-12e_coco.py, value for value."""
    cfg = load_config("dino_4scale_r50", []).cfg
    model = cfg.model
    assert (model.type, model.num_queries, model.num_feature_levels) == ("DINO", 900, 4)
    assert model.backbone.out_indices == [1, 2, 3] and model.backbone.frozen_stages == 1
    assert model.neck.norm_cfg.num_groups == 32 and model.neck.num_outs == 4
    enc, dec = model.encoder.layer_cfg, model.decoder.layer_cfg
    assert (model.encoder.num_layers, model.decoder.num_layers) == (6, 6)
    assert enc.ffn_cfg.feedforward_channels == dec.ffn_cfg.feedforward_channels == 2048
    assert enc.self_attn_cfg.dropout == dec.cross_attn_cfg.dropout == enc.ffn_cfg.ffn_drop == 0
    assert (model.positional_encoding.offset, model.positional_encoding.temperature) == (0.0, 20)
    head = model.bbox_head
    assert (head.loss_cls.type, head.loss_cls.loss_weight, head.sync_cls_avg_factor) == \
        ("FocalLoss", 1.0, True)
    assert (model.dn_cfg.label_noise_scale, model.dn_cfg.box_noise_scale,
            model.dn_cfg.group_cfg.num_dn_queries) == (0.5, 1.0, 100)
    assert [c.weight for c in model.train_cfg.assigner.match_costs] == [2.0, 5.0, 2.0]
    assert model.test_cfg.max_per_img == 300
    steps = cfg.data.train.pipeline
    assert [t.type for t in steps] == ["LoadImageFromFile", "LoadAnnotations", "RandomFlip",
                                       "RandomChoice", "Normalize", "DefaultFormatBundle",
                                       "Collect"]
    (resize,), (first, crop, second) = steps[3].transforms
    multi = [(s, 1333) for s in range(480, 801, 32)]
    assert resize.scales == second.scales == multi
    assert first.scales == [(400, 4200), (500, 4200), (600, 4200)]
    assert (crop.crop_type, tuple(crop.crop_size), crop.allow_negative_crop) == \
        ("absolute_range", (384, 600), True)
    assert cfg.data.train.filter_empty_gt is False
    assert (cfg.optimizer.type, cfg.optimizer.lr, cfg.optimizer.weight_decay) == \
        ("AdamW", 1e-4, 1e-4)
    assert cfg.optimizer.paramwise_cfg.custom_keys["backbone"].lr_mult == 0.1
    assert cfg.optimizer_config.grad_clip.max_norm == 0.1
    assert (cfg.lr_config.step, cfg.lr_config.gamma, cfg.runner.max_epochs) == ([11], 0.1, 12)
    assert cfg.data.samples_per_gpu == 2
