"""Deformable convs: a direct bilinear computation, hand-checked special cases, MMCV's layer."""

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from detcli.errors import ConfigError
from detcli.models.dcn import DCNConfig, DeformConv2dPack, ModulatedDeformConv2dPack, build_dcn
from tests.models.backbones.seeded import seeded_input

FIXTURE = Path(__file__).parent / "backbones" / "mmdet_backbones.pt"


def bilinear(image: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """(C, H, W) image read at (y, x): the four neighbours, those outside the image as 0,
    and 0 altogether unless -1 < y < H and -1 < x < W."""
    c, h, w = image.shape
    if not (-1 < y < h and -1 < x < w):
        return torch.zeros(c)
    y0, x0 = math.floor(y), math.floor(x)
    total = torch.zeros(c)
    for yy in (y0, y0 + 1):
        for xx in (x0, x0 + 1):
            if 0 <= yy < h and 0 <= xx < w:
                total += image[:, yy, xx] * (1 - abs(y - yy)) * (1 - abs(x - xx))
    return total


def direct_dcnv2(x, offset, mask, weight, stride, padding, dilation):
    """DCNv2 written out: every output pixel, tap and channel (one group, one deform group)."""
    n, _, _, _ = x.shape
    o, _, kh, kw = weight.shape
    ho, wo = offset.shape[-2:]
    out = torch.zeros(n, o, ho, wo)
    for b in range(n):
        for i in range(ho):
            for j in range(wo):
                for a in range(kh):
                    for c in range(kw):
                        k = a * kw + c
                        y = i * stride - padding + a * dilation + float(offset[b, 2 * k, i, j])
                        xx = j * stride - padding + c * dilation + float(offset[b, 2 * k + 1, i, j])
                        value = bilinear(x[b], y, xx) * float(mask[b, k, i, j])  # (C,)
                        out[b, :, i, j] += weight[:, :, a, c] @ value
    return out


def test_dcnv2_equals_the_direct_bilinear_computation():
    torch.manual_seed(0)
    layer = ModulatedDeformConv2dPack(3, 4, 3, stride=2, padding=1, dilation=1)
    nn.init.normal_(layer.conv_offset.weight, std=0.6)  # offsets of about two pixels
    nn.init.normal_(layer.conv_offset.bias, std=0.5)
    x = torch.randn(2, 3, 5, 6)
    with torch.no_grad():
        raw = layer.conv_offset(x)  # (2, 27, 3, 3): dy/dx chunks then mask logits
        offset = torch.cat(raw.chunk(3, dim=1)[:2], dim=1)
        mask = torch.sigmoid(raw.chunk(3, dim=1)[2])
        got = layer(x)
    assert offset.abs().max() > 1.5  # some taps really move, some leave the image
    expected = direct_dcnv2(x, offset, mask, layer.weight.detach(), 2, 1, 1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_fresh_packs_are_plain_convs_dcnv2_at_half_mask():
    torch.manual_seed(1)
    x = torch.randn(1, 4, 7, 7)
    for cls, scale in ((DeformConv2dPack, 1.0), (ModulatedDeformConv2dPack, 0.5)):
        layer = cls(4, 6, 3, padding=1, groups=2)
        conv = nn.Conv2d(4, 6, 3, padding=1, groups=2, bias=False)
        conv.weight.data.copy_(layer.weight.data)
        torch.testing.assert_close(layer(x), conv(x) * scale)  # zero offsets; sigmoid(0) = 1/2


def test_an_integer_offset_shifts_the_sampling_grid():
    layer = DeformConv2dPack(1, 1, 1)
    layer.weight.data.fill_(1.0)
    layer.conv_offset.bias.data[:] = torch.tensor([1.0, -2.0])  # dy = 1, dx = -2 everywhere
    x = torch.arange(20.0).reshape(1, 1, 4, 5)
    out = layer(x)[0, 0]
    expected = torch.zeros(4, 5)
    expected[:3, 2:] = x[0, 0, 1:, :3]  # out(i, j) = x(i + 1, j - 2), 0 outside
    torch.testing.assert_close(out, expected)


def test_names_and_shapes_are_mmcvs_and_offsets_learn():
    layer = build_dcn(DCNConfig(deform_groups=2), 8, 8, 3, stride=2, padding=1, groups=4)
    assert {k: tuple(v.shape) for k, v in layer.state_dict().items()} == {
        "weight": (8, 2, 3, 3), "conv_offset.weight": (2 * 3 * 9, 8, 3, 3),
        "conv_offset.bias": (54,)}
    layer(torch.randn(1, 8, 6, 6)).sum().backward()
    assert layer.conv_offset.weight.grad.abs().sum() > 0  # zero offsets still get a gradient
    assert isinstance(build_dcn(DCNConfig(type="DCN"), 8, 8, 3), DeformConv2dPack)
    assert build_dcn(DCNConfig(type="DCN"), 8, 8, 3).conv_offset.out_channels == 18


def test_bad_groups_are_config_errors():
    with pytest.raises(ConfigError, match="deform_groups 3 must divide in_channels 8"):
        ModulatedDeformConv2dPack(8, 8, 3, deform_groups=3)
    with pytest.raises(ConfigError, match="groups 3 must divide"):
        ModulatedDeformConv2dPack(8, 8, 3, groups=3)


def test_equals_mmcvs_modulated_deform_conv2d_pack_on_its_weights():
    fixture = torch.load(FIXTURE, weights_only=False)
    entry = fixture["dcn_layer"]
    kwargs = dict(entry["kwargs"])
    layer = ModulatedDeformConv2dPack(kwargs.pop("in_channels"), kwargs.pop("out_channels"),
                                      kwargs.pop("kernel_size"), **kwargs)
    layer.load_state_dict(entry["state"], strict=True)
    x = seeded_input(entry["input"], fixture["seed"])
    with torch.no_grad():
        torch.testing.assert_close(layer(x), entry["out"], rtol=1e-5, atol=1e-5)
    assert entry["out"].abs().mean() > 0.1
