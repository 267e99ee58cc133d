"""Multi-scale deformable attention: hand-computed samples, a direct per-point bilinear loop,
MMCV 2.1's module and reference function (tests/fixtures/mmdet/ms_deform_attn.pt, made by
tools/mmdet_fixtures/deformable_attention.py), the padding mask, bfloat16 and ONNX."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from detcli.models.transformer.deformable import (
    MultiScaleDeformableAttention,
    MultiScaleDeformableAttentionConfig,
    multi_scale_deformable_attn,
)
from detcli.registry import ATTENTIONS

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "mmdet" / "ms_deform_attn.pt"


@pytest.fixture(scope="module")
def fixture() -> dict:
    return torch.load(FIXTURE, weights_only=False)


def bilinear(image: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """image (C, h, w) read at normalised (x, y), (0, 0) the map's top-left corner: pixel
    (i, j) has its centre at ((j + 0.5) / w, (i + 0.5) / h); zero outside the map."""
    _, h, w = image.shape
    px, py = x * w - 0.5, y * h - 0.5  # pixel-centre coordinates
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(image.shape[0], dtype=torch.float64)
    for yy, xx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
        weight = (1 - abs(px - xx)) * (1 - abs(py - yy))
        if 0 <= yy < h and 0 <= xx < w:
            out += weight * image[:, yy, xx].double()
    return out


def test_samples_at_pixel_centres_corners_and_outside():
    """One head, one level of 2 x 2 values 1, 2 / 3, 4, one point of weight 1."""
    value = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 4, 1, 1)  # (N, S, M, Dh)
    points = {(0.25, 0.25): 1.0,  # the centre of pixel (0, 0)
              (0.75, 0.25): 2.0,  # of pixel (0, 1)
              (0.5, 0.5): 2.5,  # between the four centres: their mean
              (0.5, 0.25): 1.5,  # between 1 and 2
              (0.0, 0.0): 0.25,  # the map's corner: a quarter of pixel (0, 0), the rest zeros
              (1.5, 0.5): 0.0}  # outside
    for (x, y), expected in points.items():
        location = torch.tensor([x, y]).view(1, 1, 1, 1, 1, 2)
        out = multi_scale_deformable_attn(value, [(2, 2)], location, torch.ones(1, 1, 1, 1, 1))
        assert float(out) == pytest.approx(expected, abs=1e-6), (x, y)


def test_equals_a_direct_per_point_bilinear_sum():
    torch.manual_seed(0)
    shapes = [(3, 5), (2, 2)]
    num, queries, heads, head_dims, points = 2, 3, 2, 3, 2
    value = torch.randn(num, sum(h * w for h, w in shapes), heads, head_dims)
    locations = torch.rand(num, queries, heads, len(shapes), points, 2) * 1.4 - 0.2
    weights = torch.rand(num, queries, heads, len(shapes), points)
    out = multi_scale_deformable_attn(value, shapes, locations, weights)
    assert out.shape == (num, queries, heads * head_dims)
    starts = [0, shapes[0][0] * shapes[0][1]]
    for n in range(num):
        for q in range(queries):
            for m in range(heads):
                expected = torch.zeros(head_dims, dtype=torch.float64)
                for lvl, (h, w) in enumerate(shapes):
                    tokens = value[n, starts[lvl]:starts[lvl] + h * w, m]  # (h * w, Dh)
                    image = tokens.T.reshape(head_dims, h, w)
                    for p in range(points):
                        x, y = locations[n, q, m, lvl, p].tolist()
                        expected += weights[n, q, m, lvl, p].item() * bilinear(image, x, y)
                got = out[n, q, m * head_dims:(m + 1) * head_dims].double()
                torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_mmcv_reference_function(fixture):
    fn = fixture["fn"]
    out = multi_scale_deformable_attn(fn["value"], fixture["spatial_shapes"], fn["locations"],
                                      fn["weights"])
    torch.testing.assert_close(out, fn["out"], rtol=1e-5, atol=1e-6)


def build(fixture) -> MultiScaleDeformableAttention:
    cfg = MultiScaleDeformableAttentionConfig(**fixture["config"], dropout=0.0)
    return ATTENTIONS.build(cfg)


def test_init_and_names_are_mmcvs(fixture):
    """The same state-dict names and shapes, the offsets' direction pattern: head m along the
    angle 2 pi m / M (2 heads: +x and -x), point p at p + 1 times it."""
    attn = build(fixture)
    ours = attn.state_dict()
    theirs = fixture["init_state"]
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    for key in ("sampling_offsets.weight", "sampling_offsets.bias", "attention_weights.weight",
                "attention_weights.bias", "value_proj.bias", "output_proj.bias"):
        torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=1e-6, msg=key)
    bias = ours["sampling_offsets.bias"].view(2, 2, 3, 2)  # (M, L, P, (x, y))
    assert bias[0, 1].tolist() == [[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]]
    torch.testing.assert_close(bias[1, 0], torch.tensor([[-1.0, 0.0], [-2.0, 0.0], [-3.0, 0.0]]),
                               rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["points", "boxes"])
def test_module_equals_mmcvs(fixture, kind):
    attn = build(fixture)
    attn.load_state_dict(fixture["state"], strict=True)
    ref = fixture["ref_points"] if kind == "points" else fixture["ref_boxes"]
    with torch.no_grad():
        out = attn(fixture["query"], fixture["value"], reference_points=ref,
                   spatial_shapes=fixture["spatial_shapes"], query_pos=fixture["query_pos"],
                   key_padding_mask=fixture["key_padding_mask"], identity=fixture["identity"])
    torch.testing.assert_close(out, fixture["outputs"][kind], rtol=1e-5, atol=1e-5)


def test_self_attention_defaults_value_and_identity_to_the_query(fixture):
    attn = build(fixture)
    attn.load_state_dict(fixture["state"], strict=True)
    with torch.no_grad():
        out = attn(fixture["value"], reference_points=fixture["self_ref"],
                   spatial_shapes=fixture["spatial_shapes"],
                   key_padding_mask=fixture["key_padding_mask"])
    torch.testing.assert_close(out, fixture["outputs"]["self"], rtol=1e-5, atol=1e-5)


def test_padded_values_are_not_read(fixture):
    """Whatever the padded tokens hold, the output is the same (their values are zeroed)."""
    attn = build(fixture)
    attn.load_state_dict(fixture["state"], strict=True)
    mask = fixture["key_padding_mask"]
    changed = fixture["value"].masked_fill(mask[..., None], 100.0)
    args = dict(reference_points=fixture["ref_points"], spatial_shapes=fixture["spatial_shapes"],
                key_padding_mask=mask)
    with torch.no_grad():
        base = attn(fixture["query"], fixture["value"], **args)
        torch.testing.assert_close(attn(fixture["query"], changed, **args), base)
        unmasked = attn(fixture["query"], changed, **{**args, "key_padding_mask": None})
    assert not torch.allclose(unmasked, base)


def test_levels_must_match_and_width_must_divide():
    attn = MultiScaleDeformableAttention(embed_dims=8, num_heads=2, num_levels=2, num_points=1)
    with pytest.raises(ValueError, match="num_levels 2, got 1 levels"):
        attn(torch.zeros(1, 2, 8), reference_points=torch.zeros(1, 2, 1, 2),
             spatial_shapes=[(2, 2)])
    with pytest.raises(ValueError, match="num_heads 3 must divide the value width 8"):
        MultiScaleDeformableAttentionConfig(embed_dims=8, num_heads=3)


def test_bfloat16_runs_in_bfloat16(fixture):
    attn = build(fixture)
    attn.load_state_dict(fixture["state"], strict=True)
    args = dict(reference_points=fixture["ref_points"], spatial_shapes=fixture["spatial_shapes"],
                key_padding_mask=fixture["key_padding_mask"])
    with torch.no_grad():
        full = attn(fixture["query"], fixture["value"], **args)
        half = attn.to(torch.bfloat16)(fixture["query"].bfloat16(),
                                       fixture["value"].bfloat16(),
                                       **{**args, "reference_points": args["reference_points"]
                                          .bfloat16()})
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), full, rtol=0.05, atol=0.1)


class _Wrapped(torch.nn.Module):
    def __init__(self, attn: MultiScaleDeformableAttention) -> None:
        super().__init__()
        self.attn = attn

    def forward(self, query, value, reference_points):
        return self.attn(query, value, reference_points=reference_points,
                         spatial_shapes=[(5, 7), (3, 4)])


def test_onnx_grid_sample_matches_pytorch(fixture, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    attn = build(fixture)
    attn.load_state_dict(fixture["state"], strict=True)
    model = _Wrapped(attn).eval()
    args = (fixture["query"], fixture["value"], fixture["ref_points"])
    path = tmp_path / "msda.onnx"
    torch.onnx.export(model, args, str(path), opset_version=18, dynamo=True,
                      input_names=["query", "value", "reference_points"])
    graph = onnx.load(str(path)).graph
    assert {node.op_type for node in graph.node} >= {"GridSample"}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    got = session.run(None, {n: a.numpy() for n, a in zip(names, args)})[0]
    with torch.no_grad():
        expected = model(*args)
    torch.testing.assert_close(torch.from_numpy(got), expected, rtol=1e-4, atol=1e-5)
