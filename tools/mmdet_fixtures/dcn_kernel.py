"""mmcv's ``modulated_deform_conv_forward`` kernel in plain torch, for the MMDetection reference
on the CPU (``../shared/mmdet_reference/mmcv_ext_shim.py`` serves ``mmcv._ext`` without it).

Written from mmcv's CUDA kernel (``modulated_deform_im2col_gpu_kernel`` and
``dmcn_im2col_bilinear``), not from torchvision, so a fixture made with it checks det's DCN
(on ``torchvision.ops.deform_conv2d``) against an independent computation:

- output pixel (i, j), tap (a, b) of deform group g reads the input at
  ``y = i * stride_h - pad_h + a * dilation_h + dy``, ``x = j * stride_w - pad_w + b * dilation_w
  + dx``, where ``dy`` / ``dx`` are offset channels ``2 (g K + a k_w + b)`` and ``+ 1``;
- the read is bilinear over the four neighbours, a neighbour outside the image counting as 0,
  and the whole read is 0 unless ``-1 < y < H`` and ``-1 < x < W``;
- the read is multiplied by mask channel ``g K + a k_w + b``, and the columns are convolved
  with the weight in ``group`` groups, plus the bias when ``with_bias``.

Use: :func:`install` after ``mmcv_ext_shim.install()`` and before building a DCN layer.
"""

from __future__ import annotations

import sys

import torch
from torch import Tensor


def bilinear_zero_padded(image: Tensor, y: Tensor, x: Tensor) -> Tensor:
    """Sample (N, G, C, H, W) ``image`` at (N, G, P) positions ``y``, ``x`` -> (N, G, C, P)."""
    n, g, c, h, w = image.shape
    flat = image.reshape(n, g, c, h * w)
    inside = (y > -1) & (x > -1) & (y < h) & (x < w)
    y0, x0 = torch.floor(y), torch.floor(x)
    out = image.new_zeros(n, g, c, y.shape[-1])
    for cy, cx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
        weight = (1 - (y - cy).abs()) * (1 - (x - cx).abs())  # (N, G, P)
        valid = inside & (cy >= 0) & (cy <= h - 1) & (cx >= 0) & (cx <= w - 1)
        index = (cy.clamp(0, h - 1) * w + cx.clamp(0, w - 1)).long()  # (N, G, P)
        values = flat.gather(3, index[:, :, None, :].expand(n, g, c, -1))
        out += values * (weight * valid)[:, :, None, :]
    return out


def modulated_deform_conv(input: Tensor, offset: Tensor, mask: Tensor, weight: Tensor,
                          bias: Tensor | None, stride: tuple[int, int], pad: tuple[int, int],
                          dilation: tuple[int, int], group: int,
                          deform_group: int) -> Tensor:
    """(N, C, H, W) input, (N, 2 G K, H', W') offset, (N, G K, H', W') mask, (O, C / group,
    k_h, k_w) weight -> (N, O, H', W')."""
    n, c, h, w = input.shape
    o, _, kh, kw = weight.shape
    ho, wo = offset.shape[-2:]
    taps = kh * kw
    rows = torch.arange(ho, dtype=input.dtype) * stride[0] - pad[0]
    cols = torch.arange(wo, dtype=input.dtype) * stride[1] - pad[1]
    tap_y = (torch.arange(kh, dtype=input.dtype) * dilation[0]).repeat_interleave(kw)  # (K,)
    tap_x = (torch.arange(kw, dtype=input.dtype) * dilation[1]).repeat(kh)  # (K,)
    base_y = tap_y[:, None, None] + rows[None, :, None]  # (K, H', 1)
    base_x = tap_x[:, None, None] + cols[None, None, :]  # (K, 1, W')
    off = offset.reshape(n, deform_group, taps, 2, ho, wo)
    y = (base_y + off[:, :, :, 0]).reshape(n, deform_group, -1)  # (N, G, K H' W')
    x = (base_x + off[:, :, :, 1]).reshape(n, deform_group, -1)
    image = input.reshape(n, deform_group, c // deform_group, h, w)
    sampled = bilinear_zero_padded(image, y, x)  # (N, G, C / G, K H' W')
    sampled = sampled * mask.reshape(n, deform_group, 1, -1)
    columns = sampled.reshape(n, c, taps, ho * wo)  # (N, C, K, H' W')
    columns = columns.reshape(n, group, (c // group) * taps, ho * wo)
    kernels = weight.reshape(group, o // group, (c // group) * taps)
    out = torch.einsum("gok,ngkp->ngop", kernels, columns).reshape(n, o, ho, wo)
    return out if bias is None else out + bias[None, :, None, None]


def modulated_deform_conv_forward(input, weight, bias, ones, offset, mask, output, columns,
                                  kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                                  dilation_h, dilation_w, group, deformable_group, with_bias):
    """mmcv's kernel signature: writes the result into ``output``."""
    result = modulated_deform_conv(input, offset, mask, weight, bias if with_bias else None,
                                   (stride_h, stride_w), (pad_h, pad_w),
                                   (dilation_h, dilation_w), group, deformable_group)
    output.copy_(result)


def install() -> None:
    """Add the kernel to the ``mmcv._ext`` stand-in the shared shim installed."""
    sys.modules["mmcv._ext"].modulated_deform_conv_forward = modulated_deform_conv_forward
