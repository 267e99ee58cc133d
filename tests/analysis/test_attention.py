"""det viz attention's analysis (detcli/analysis/attention.py): the recorder on a hand-set
MultiScaleDeformableAttention (sampling locations in pixels and softmax weights worked out by
hand, point and box references), the record reproducing the module's output, and the view of
a tiny DINO and Deformable DETR (weights per head summing to 1, the stand-in's initial
pattern, the references against the model's own layers), and its errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from detcli.analysis.attention import (
    SamplingRecorder,
    deformable_detectors,
    query_attention,
    visualize_attention,
)
from detcli.config.loader import load_config
from detcli.errors import ConfigError, DetError
from detcli.models.build import build_detector
from detcli.models.transformer.deformable import (
    MultiScaleDeformableAttention,
    multi_scale_deformable_attn,
)
from tests.analysis.tiny_data import make_tiny, with_preset

# 2 levels of a (H, W) = (32, 64) input: (4, 8) at stride 8 and (2, 4) at stride 16
SHAPES = [(4, 8), (2, 4)]
PAD_SHAPE = (32, 64)


def hand_set_attention(offsets: list[float], logits: list[float], num_heads: int = 2,
                       num_levels: int = 2, num_points: int = 2) -> MultiScaleDeformableAttention:
    """An attention whose offsets and weight logits are its biases (zero matrices): the same
    for every query."""
    attn = MultiScaleDeformableAttention(embed_dims=4, num_heads=num_heads,
                                         num_levels=num_levels, num_points=num_points,
                                         dropout=0.0)
    with torch.no_grad():
        attn.sampling_offsets.weight.zero_()
        attn.sampling_offsets.bias.copy_(torch.tensor(offsets))
        attn.attention_weights.weight.zero_()
        attn.attention_weights.bias.copy_(torch.tensor(logits))
    return attn.eval()


def test_recorder_gives_the_hand_computed_locations_in_pixels_and_softmax_weights():
    # (M, L, P, 2) offsets in pixels of each level: head 0 right, up / diagonal, left 2;
    # head 1 down 2 on level 0, nothing else
    offsets = [1, 0, 0, -1, 0.5, 0.5, -2, 0,
               0, 2, 0, 0, 0, 0, 0, 0]
    # head 0's logits 0, ln 2, ln 3, ln 4 -> softmax 1/10, 2/10, 3/10, 4/10; head 1's equal
    logits = [0.0, math.log(2), math.log(3), math.log(4), 0.0, 0.0, 0.0, 0.0]
    attn = hand_set_attention(offsets, logits)
    torch.manual_seed(0)
    query, query_pos = torch.randn(1, 1, 4), torch.randn(1, 1, 4)
    value = torch.randn(1, 40, 4)  # 4 x 8 + 2 x 4 tokens
    reference = torch.tensor([0.5, 0.25]).expand(1, 1, 2, 2)  # (N, Q, L, 2): pixel (32, 8)
    with SamplingRecorder(attn) as recorder:
        attn(query, value, query_pos=query_pos, reference_points=reference, spatial_shapes=SHAPES)
    assert len(recorder.records) == 1 and not attn._forward_pre_hooks  # removed on exit
    row = query_attention(recorder.records[0], 0, PAD_SHAPE)
    # reference (32, 8) + offset x stride (8 on level 0, 16 on level 1)
    expected = [[[[40, 8], [32, 0]], [[40, 16], [0, 8]]],
                [[[32, 24], [32, 8]], [[32, 8], [32, 8]]]]
    np.testing.assert_allclose(row.points, expected, atol=1e-4)
    np.testing.assert_allclose(row.weights, [[[0.1, 0.2], [0.3, 0.4]],
                                             [[0.25, 0.25], [0.25, 0.25]]], atol=1e-6)
    np.testing.assert_allclose(row.reference, [[32, 8], [32, 8]], atol=1e-5)
    assert row.reference_box is None
    # each head's weights sum to 1 over L x P; a level's share: (0.1 + 0.2 + 0.5) / 2
    np.testing.assert_allclose(row.weights.sum(axis=(1, 2)), [1, 1], atol=1e-6)
    assert [lv.weight_mass for lv in row.levels] == pytest.approx([0.4, 0.6], abs=1e-6)
    assert [lv.map_shape for lv in row.levels] == SHAPES
    # level 0: distances 8, 8 (head 0), 16, 0 (head 1); level 1: 8 sqrt 2, 32, 0, 0
    assert row.levels[0].mean_distance == pytest.approx(8.0, abs=1e-4)
    assert row.levels[0].weighted_distance == pytest.approx((0.8 + 1.6 + 4.0) / 0.8, abs=1e-4)
    assert row.levels[1].mean_distance == pytest.approx((8 * math.sqrt(2) + 32) / 4, abs=1e-4)
    assert row.levels[1].weighted_distance == pytest.approx(
        (0.3 * 8 * math.sqrt(2) + 0.4 * 32) / 1.2, abs=1e-4)


def test_box_references_scale_the_offsets_by_half_the_box_over_p():
    # one head, one level (4, 8), 2 points: offsets (1, 0) and (-2, 1)
    attn = hand_set_attention([1, 0, -2, 1], [0.0, 0.0], num_heads=1, num_levels=1)
    reference = torch.tensor([0.5, 0.5, 0.25, 0.5]).view(1, 1, 1, 4)  # box 16 x 16 at (32, 16)
    with SamplingRecorder(attn) as recorder:
        attn(torch.zeros(1, 1, 4), torch.zeros(1, 32, 4), reference_points=reference,
             spatial_shapes=SHAPES[:1])
    row = query_attention(recorder.records[0], 0, PAD_SHAPE)
    # centre + offset / P x half size (8, 8): (32 + 4, 16), (32 - 8, 16 + 4)
    np.testing.assert_allclose(row.points[0, 0], [[36, 16], [24, 20]], atol=1e-4)
    np.testing.assert_allclose(row.reference_box, [[24, 8, 40, 24]], atol=1e-4)
    np.testing.assert_allclose(row.weights, [[[0.5, 0.5]]], atol=1e-6)
    assert row.levels[0].mean_distance == pytest.approx((4 + math.sqrt(80)) / 2, abs=1e-4)


def test_the_record_is_what_the_forward_pass_sampled_and_changes_nothing():
    torch.manual_seed(1)
    attn = MultiScaleDeformableAttention(embed_dims=8, num_heads=2, num_levels=2, num_points=3,
                                         dropout=0.0).eval()
    with torch.no_grad():  # query-dependent offsets and weights
        attn.sampling_offsets.weight.normal_(std=0.5)
        attn.attention_weights.weight.normal_(std=0.5)
    query, query_pos, value = torch.randn(2, 5, 8), torch.randn(2, 5, 8), torch.randn(2, 40, 8)
    reference = torch.rand(2, 5, 2, 2)
    args = dict(query_pos=query_pos, reference_points=reference, spatial_shapes=SHAPES)
    with torch.no_grad():
        plain = attn(query, value, **args)
        with SamplingRecorder(attn) as recorder:
            recorded = attn(query, value, **args)
        assert torch.equal(plain, recorded)
        record = recorder.records[0]
        assert record.locations.shape == (2, 5, 2, 2, 3, 2)  # (N, Q, M, L, P, 2)
        assert record.weights.shape == (2, 5, 2, 2, 3)
        values = attn.value_proj(value).view(2, 40, 2, 4)  # (N, S, M, Dh)
        again = attn.output_proj(multi_scale_deformable_attn(values, SHAPES, record.locations,
                                                             record.weights)) + query
    torch.testing.assert_close(again, plain, rtol=0, atol=1e-6)
    torch.testing.assert_close(record.weights.sum((-1, -2)), torch.ones(2, 5, 2), rtol=0,
                               atol=1e-6)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("attention"))


def preset(tiny, name: str, *overrides: str):
    """The tiny data's config with ``name``'s model (class names square, circle, triangle)."""
    return load_config(with_preset(tiny, name).config, list(overrides)).cfg


def test_dino_stand_in_samples_mmcvs_initial_pattern_in_its_reference_boxes(tiny):
    cfg = preset(tiny, "dino_tiny_synth")
    view = visualize_attention(cfg, tiny.image_a, top=2)
    assert (view.source, view.layer, view.num_layers, view.reference_kind) == \
        ("stand_in", 1, 2, "box")
    assert view.pad_shape == (192, 256)
    assert view.spatial_shapes == ((24, 32), (12, 16), (6, 8), (3, 4))
    assert view.selection == "top 2 by score" and view.source_text.startswith("stand-in model")
    scores = [q.score for q in view.queries]
    assert scores == sorted(scores, reverse=True) and len(scores) == 2
    for row in view.queries:
        assert row.points.shape == (4, 4, 4, 2)  # (M, L, P, 2)
        assert row.class_name in ("square", "circle", "triangle")
        np.testing.assert_allclose(row.weights, 1 / 16, atol=1e-6)  # uniform: 1 / (L x P)
        half = (row.reference_box[:, 2:] - row.reference_box[:, :2]) / 2  # (L, 2)
        # head 0 points along +x: point p at (p + 1) / 4 of the half width, on every level
        expected = row.reference[:, None] + np.stack(
            [np.outer(half[:, 0], np.arange(1, 5) / 4), np.zeros((4, 4))], -1)
        np.testing.assert_allclose(row.points[0], expected, atol=1e-3)
        assert sum(lv.weight_mass for lv in row.levels) == pytest.approx(1.0, abs=1e-6)


def test_deformable_detr_layer_0_samples_around_its_reference_points(tiny):
    cfg = preset(tiny, "deformable_detr_tiny_synth")
    view = visualize_attention(cfg, tiny.image_a, queries=[3, 7, 3], layer=0, seed=4)
    assert [q.query for q in view.queries] == [3, 7] and view.selection == "--query"
    assert (view.layer, view.reference_kind) == (0, "point")  # layer 1: refined boxes
    # the same seeded model's first references: sigmoid(reference_points_fc(query_pos)), and
    # no padding (valid ratios 1), in pixels of the 256 x 192 input
    torch.manual_seed(4)
    model = build_detector(cfg.model)
    query_pos = model.query_embedding.weight[:, :model.embed_dims]
    with torch.no_grad():
        references = model.reference_points_fc(query_pos).sigmoid() * torch.tensor([256, 192])
    for row in view.queries:
        np.testing.assert_allclose(row.reference, references[row.query][None].expand(4, -1),
                                   atol=1e-3)
        np.testing.assert_allclose(row.weights.sum(axis=(1, 2)), np.ones(4), atol=1e-6)
        # the stand-in's head 0, level l: point p at (p + 1) pixels of level l (stride 8 * 2^l)
        strides = np.array([8, 16, 32, 64])
        np.testing.assert_allclose(row.points[0, :, :, 0] - row.reference[:, None, 0],
                                   np.outer(strides, np.arange(1, 5)), atol=1e-3)


def test_configs_without_deformable_attention_are_refused_by_name(tiny):
    assert {"DeformableDETR", "DINO"} <= set(deformable_detectors())
    assert "DETR" not in deformable_detectors() and "RetinaNet" not in deformable_detectors()
    cfg = preset(tiny, "retinanet_tiny_synth")
    with pytest.raises(ConfigError, match="tiny.toml configures a RetinaNet, which has no "
                                          "deformable attention.*DINO, DeformableDETR"):
        visualize_attention(cfg, tiny.image_a, config_name="tiny.toml")


@pytest.mark.parametrize("kwargs, message", [
    ({"queries": [30]}, r"--query 30: the model has 30 queries \(0 to 29\)"),
    ({"layer": 2}, r"--layer 2: the decoder has 2 layers \(0 to 1\)"),
])
def test_out_of_range_queries_and_layers_name_the_range(tiny, kwargs, message):
    cfg = preset(tiny, "dino_tiny_synth")
    with pytest.raises(DetError, match=message):
        visualize_attention(cfg, tiny.image_a, **kwargs)
