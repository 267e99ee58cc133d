"""The portable DCN kernel (grid_sample + matmul, what an ONNX graph can hold) against
``torchvision.ops.deform_conv2d``, and the switch that selects it."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import deform_conv2d

from detcli.models.dcn import (
    DeformConv2dPack,
    ModulatedDeformConv2dPack,
    deform_conv2d_portable,
    portable_deform_convs,
)
from tests.models.test_dcn import bilinear

# (N, C_in, C_out, H, W, (k_h, k_w), stride, padding, dilation, groups, deform_groups, mask)
CASES = {
    "3x3": (2, 8, 6, 7, 9, (3, 3), (1, 1), (1, 1), (1, 1), 1, 1, True),
    "stride2_dil2_groups2_dg4": (2, 8, 6, 9, 11, (3, 3), (2, 2), (1, 1), (2, 2), 2, 4, True),
    "one_row_image_no_mask": (1, 4, 4, 1, 5, (3, 3), (1, 1), (1, 1), (1, 1), 1, 2, False),
    "3x2_kernel_groups3_dg2": (2, 6, 9, 5, 4, (3, 2), (2, 1), (1, 0), (1, 2), 3, 2, True),
    "1x1": (1, 4, 2, 3, 3, (1, 1), (1, 1), (0, 0), (1, 1), 1, 1, True),
}


def out_size(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


@pytest.mark.parametrize("name", list(CASES))
def test_portable_kernel_equals_torchvisions(name):
    n, c_in, c_out, h, w, (kh, kw), stride, padding, dilation, groups, dg, with_mask = CASES[name]
    g = torch.Generator().manual_seed(len(name))
    ho, wo = out_size(h, kh, stride[0], padding[0], dilation[0]), out_size(
        w, kw, stride[1], padding[1], dilation[1])
    x = torch.randn(n, c_in, h, w, generator=g)
    # offsets of up to ~8 pixels: many taps read partly or wholly outside the image
    offset = torch.randn(n, 2 * dg * kh * kw, ho, wo, generator=g) * 3
    mask = torch.rand(n, dg * kh * kw, ho, wo, generator=g) if with_mask else None
    weight = torch.randn(c_out, c_in // groups, kh, kw, generator=g)
    bias = torch.randn(c_out, generator=g)
    args = dict(stride=stride, padding=padding, dilation=dilation, mask=mask)
    expected = deform_conv2d(x, offset, weight, bias, **args)
    got = deform_conv2d_portable(x, offset, weight, bias, **args)
    assert got.shape == expected.shape == (n, c_out, ho, wo)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(deform_conv2d_portable(x, offset, weight, None, **args),
                               deform_conv2d(x, offset, weight, None, **args),
                               rtol=1e-5, atol=1e-5)


def test_the_border_reads_are_torchvisions_and_the_hand_bilinears():
    """A 1x1 kernel on a 3 x 4 image, one output pixel per read position: the positions sit on
    the border rules (-1 and H, W: zero; -0.5: half a pixel; H - 1 exactly; inside)."""
    image = torch.arange(1.0, 13.0).reshape(1, 1, 3, 4)
    positions = [(-1.0, 0.0), (0.0, -1.0), (-0.5, 1.0), (2.0, 3.0), (2.5, 3.5), (3.0, 0.0),
                 (1.25, 4.0), (1.5, 2.75), (-0.99, -0.99), (0.0, 0.0), (2.99, 1.0), (1.0, 3.5)]
    offset = torch.zeros(1, 2, 3, 4)  # output pixel (i, j) base position (i, j)
    expected = torch.zeros(1, 1, 3, 4)
    for index, (y, x) in enumerate(positions):
        i, j = divmod(index, 4)
        offset[0, 0, i, j], offset[0, 1, i, j] = y - i, x - j
        expected[0, 0, i, j] = bilinear(image[0], y, x)
    weight = torch.ones(1, 1, 1, 1)
    torch.testing.assert_close(deform_conv2d(image, offset, weight), expected)
    torch.testing.assert_close(deform_conv2d_portable(image, offset, weight), expected)
    assert expected[0, 0, 0, 0] == 0 and expected[0, 0, 0, 1] == 0  # at -1: nothing
    assert expected[0, 0, 0, 2] == pytest.approx(0.5 * 2)  # y -0.5: half of pixel (0, 1)


def test_portable_gradients_equal_torchvisions():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, 5, 6, generator=g)
    offset = torch.randn(1, 18, 5, 6, generator=g) * 1.3
    mask = torch.rand(1, 9, 5, 6, generator=g)
    weight = torch.randn(3, 4, 3, 3, generator=g)
    grads = []
    for kernel in (deform_conv2d, deform_conv2d_portable):
        inputs = [t.clone().requires_grad_() for t in (x, offset, mask, weight)]
        out = kernel(inputs[0], inputs[1], inputs[3], padding=(1, 1), mask=inputs[2])
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
        grads.append([t.grad for t in inputs])
    for ours, theirs in zip(grads[1], grads[0]):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_the_switch_selects_the_portable_kernel_and_restores_the_default():
    torch.manual_seed(0)
    model = torch.nn.Sequential(ModulatedDeformConv2dPack(4, 4, 3, padding=1, deform_groups=2),
                                torch.nn.ReLU(), DeformConv2dPack(4, 2, 3, padding=1))
    for pack in (model[0], model[2]):
        torch.nn.init.normal_(pack.conv_offset.weight, std=0.5)  # offsets of a pixel or two
    x = torch.randn(2, 4, 6, 5)
    with torch.no_grad():
        default = model(x)
        with portable_deform_convs(model) as switched:
            assert switched == 2 and model[0].kernel == model[2].kernel == "portable"
            portable = model(x)
    assert model[0].kernel == model[2].kernel == "torchvision"
    torch.testing.assert_close(portable, default, rtol=1e-5, atol=1e-5)
    assert float(default.abs().max()) > 0.1
