"""Deformable convolutions (DCN, Dai et al. 2017; DCNv2, Zhu et al. 2019) on
``torchvision.ops.deform_conv2d``: MMCV's ``DeformConv2dPack`` and ``ModulatedDeformConv2dPack``.

N images, C_in / C_out channels, H x W input, H' x W' output, k_h x k_w kernel (K = k_h * k_w
taps), G ``deform_groups`` (input channels split in G groups that share one set of offsets).

A *pack* predicts its own sampling offsets: ``conv_offset``, a plain conv with the deformable
conv's kernel, stride, padding and dilation, maps the input to per-output-pixel offsets (and for
DCNv2 a mask). Output pixel p of tap k then reads the input bilinearly at
``p * stride - padding + k * dilation + (dy, dx)`` (zero outside the image), multiplied by the
tap's mask, and the taps are summed with the weights as an ordinary conv would.

Channel layout of ``conv_offset``'s output (MMCV's, also torchvision's): for DCNv2, 3 G K
channels split into three equal chunks ``o1, o2, m``; the offsets are ``cat(o1, o2)`` (2 G K
channels, for group g and tap k: channel ``2 (g K + k)`` is dy, ``2 (g K + k) + 1`` dx) and the
mask ``sigmoid(m)`` (G K channels, ``g K + k``). For DCN (no mask), 2 G K offset channels.

``conv_offset`` starts at zero (so a fresh pack is a plain conv, and DCNv2's mask is 0.5); the
weight starts as MMCV's: uniform in ``+-1 / sqrt(C_in k_h k_w)`` for DCNv2, Kaiming uniform
(fan_in, ReLU gain) for DCN. Parameter names are MMCV's
(``weight``, ``bias``, ``conv_offset.weight``, ``conv_offset.bias``), so a pack replacing a
ResNet's ``conv2`` loads the ImageNet ``conv2.weight`` and MMDetection checkpoints load as is.

Two kernels compute the same thing. ``torchvision.ops.deform_conv2d`` (a pack's default, CPU and
CUDA) exports only as ONNX's ``DeformConv`` (opset 19 and newer, not in every runtime), so
:func:`deform_conv2d_portable` writes it with ops every opset has (one ``GridSample`` for every
tap of every deform group, a mask product, a ``MatMul`` with the weight); the ONNX export
switches every pack to it with :func:`portable_deform_convs`
(``tests/models/test_dcn_portable.py`` holds the two kernels equal).
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from torch.nn.modules.utils import _pair
from torchvision.ops import deform_conv2d

from detcli.config.schema import Schema
from detcli.errors import ConfigError


class DCNConfig(Schema):
    """MMDetection's ``dcn`` dict: which deformable conv replaces a block's 3x3 conv.

    ``DCNv2`` is MMCV's ``ModulatedDeformConv2dPack`` (offsets and a sigmoid mask), ``DCN`` its
    ``DeformConv2dPack`` (offsets only). ``fallback_on_stride = true`` keeps the plain conv in
    every block of the stage, as MMDetection's ResNet does (it does not look at the stride)."""

    type: Literal["DCN", "DCNv2"] = "DCNv2"
    deform_groups: int = Field(1, ge=1)
    fallback_on_stride: bool = False


def deform_conv2d_portable(x: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None = None,
                           stride: tuple[int, int] = (1, 1), padding: tuple[int, int] = (0, 0),
                           dilation: tuple[int, int] = (1, 1),
                           mask: Tensor | None = None) -> Tensor:
    """``torchvision.ops.deform_conv2d`` (same arguments, same result) in plain tensor ops that
    ONNX has, for the export.

    x (N, C_in, H, W), offset (N, 2 G K, H', W'), mask (N, G K, H', W') or None, weight
    (C_out, C_in / groups, k_h, k_w): the conv ``groups`` are C_in over the weight's second
    dim, G is the offset's channels over 2 K. Tap (a, b) of output pixel (i, j) reads the input
    at ``y = i s_h - p_h + a d_h + dy``, ``x = j s_w - p_w + b d_w + dx``: ``grid_sample``
    (bilinear, zeros outside, ``align_corners=False``, so pixel centre x sits at
    ``(2 x + 1) / W - 1`` for every W, 1 included) reads all K taps of a deform group at once,
    a neighbour outside the image counting as 0 and a point at or beyond one pixel outside
    reading 0, as torchvision's kernel. The reads times the mask are the columns of an im2col
    conv: one matmul per conv group with the weight, plus the bias.
    """
    n, c_in, h, w = x.shape
    c_out, c_per_group, k_h, k_w = weight.shape
    groups = c_in // c_per_group
    taps = k_h * k_w
    h_out, w_out = offset.shape[-2:]
    deform_groups = offset.shape[1] // (2 * taps)
    # every tap's position before its offset, in input pixels
    rows = torch.arange(h_out, device=x.device, dtype=x.dtype) * stride[0] - padding[0]  # (H',)
    cols = torch.arange(w_out, device=x.device, dtype=x.dtype) * stride[1] - padding[1]  # (W',)
    tap_y = (torch.arange(k_h, device=x.device, dtype=x.dtype) * dilation[0]).repeat_interleave(
        k_w)  # (K,): a d_h for tap k = a k_w + b
    tap_x = (torch.arange(k_w, device=x.device, dtype=x.dtype) * dilation[1]).repeat(k_h)  # (K,)
    offset = offset.reshape(n, deform_groups, taps, 2, h_out, w_out)  # dy, dx per group and tap
    y = tap_y[:, None, None] + rows[None, :, None] + offset[:, :, :, 0]  # (N, G, K, H', W')
    x_pos = tap_x[:, None, None] + cols[None, None, :] + offset[:, :, :, 1]  # (N, G, K, H', W')
    # pixel -> grid_sample's [-1, 1] (align_corners=False): x -> (2 x + 1) / W - 1
    grid = torch.stack(((2 * x_pos + 1) / w - 1, (2 * y + 1) / h - 1), dim=-1)
    grid = grid.reshape(n * deform_groups, taps * h_out, w_out, 2)  # the K taps stacked in rows
    image = x.reshape(n * deform_groups, c_in // deform_groups, h, w)  # (N G, C_in / G, H, W)
    sampled = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros",
                            align_corners=False)  # (N G, C_in / G, K H', W')
    if mask is not None:
        sampled = sampled * mask.reshape(n * deform_groups, 1, taps * h_out, w_out)
    # im2col columns: channel-major, tap-minor, as the weight's (C_in / groups, k_h, k_w)
    columns = sampled.reshape(n, groups, c_per_group * taps, h_out * w_out)
    out = torch.matmul(weight.reshape(groups, c_out // groups, c_per_group * taps),
                       columns)  # (N, groups, C_out / groups, H' W')
    out = out.reshape(n, c_out, h_out, w_out)
    return out if bias is None else out + bias[None, :, None, None]


DeformKernel = Literal["torchvision", "portable"]
KERNELS: dict[str, Callable[..., Tensor]] = {
    "torchvision": deform_conv2d,
    "portable": deform_conv2d_portable,
}


class DeformConv2dPack(nn.Module):
    """A deformable conv whose offsets come from ``conv_offset`` (DCN v1, no mask).

    (N, C_in, H, W) -> (N, C_out, H', W'), H' and W' as an ``nn.Conv2d`` with the same settings.
    ``kernel`` says which function computes it (module docstring): ``"torchvision"``, or
    ``"portable"`` inside :func:`portable_deform_convs`.
    """

    modulated = False
    kernel: DeformKernel = "torchvision"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 *, stride: int = 1, padding: int = 0, dilation: int = 1, groups: int = 1,
                 deform_groups: int = 1, bias: bool = False) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ConfigError(f"{type(self).__name__}: groups {groups} must divide in_channels "
                              f"{in_channels} and out_channels {out_channels}")
        if in_channels % deform_groups:
            raise ConfigError(f"{type(self).__name__}: deform_groups {deform_groups} must divide "
                              f"in_channels {in_channels}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.deform_groups = deform_groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups,
                                               *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        taps = self.kernel_size[0] * self.kernel_size[1]
        per_tap = 3 if self.modulated else 2
        self.conv_offset = nn.Conv2d(in_channels, deform_groups * per_tap * taps,
                                     self.kernel_size, stride=self.stride, padding=self.padding,
                                     dilation=self.dilation, bias=True)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """MMCV's init: the weight (:meth:`init_weight`), zero bias, zero ``conv_offset``."""
        self.init_weight()
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def init_weight(self) -> None:
        """MMCV's ``DeformConv2d``: Kaiming uniform (fan_in, ReLU)."""
        nn.init.kaiming_uniform_(self.weight, nonlinearity="relu")

    def offsets_and_mask(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """The sampling offsets (N, 2 G K, H', W') and, for DCNv2, the mask (N, G K, H', W')."""
        return self.conv_offset(x), None

    def forward(self, x: Tensor) -> Tensor:
        offset, mask = self.offsets_and_mask(x)
        # deform_conv2d computes in the input's dtype; under autocast the offset conv may not
        offset = offset.to(x.dtype)
        mask = None if mask is None else mask.to(x.dtype)
        return KERNELS[self.kernel](x, offset, self.weight.to(x.dtype),
                             None if self.bias is None else self.bias.to(x.dtype),
                             stride=self.stride, padding=self.padding, dilation=self.dilation,
                             mask=mask)  # (N, C_out, H', W')

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"groups={self.groups}, deform_groups={self.deform_groups}")


class ModulatedDeformConv2dPack(DeformConv2dPack):
    """DCNv2: offsets and a per-tap sigmoid mask from ``conv_offset`` (3 G K channels)."""

    modulated = True

    def init_weight(self) -> None:
        """MMCV's ``ModulatedDeformConv2d``: uniform in +-1/sqrt(C_in k_h k_w)."""
        bound = 1.0 / math.sqrt(self.in_channels * self.kernel_size[0] * self.kernel_size[1])
        nn.init.uniform_(self.weight, -bound, bound)

    def offsets_and_mask(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        out = self.conv_offset(x)  # (N, 3 G K, H', W'): chunks o1, o2, m
        split = 2 * (out.shape[1] // 3)  # cat(o1, o2) is the first two thirds (sliced, not
        # chunked: ONNX's version converter cannot take the Split of a chunk to opset 17)
        return out[:, :split], torch.sigmoid(out[:, split:])


DCN_LAYERS: dict[str, type[DeformConv2dPack]] = {
    "DCN": DeformConv2dPack,
    "DCNv2": ModulatedDeformConv2dPack,
}


def build_dcn(cfg: DCNConfig, in_channels: int, out_channels: int, kernel_size: int, *,
              stride: int = 1, padding: int = 0, dilation: int = 1, groups: int = 1,
              bias: bool = False) -> DeformConv2dPack:
    """The pack ``cfg`` names, with ``cfg.deform_groups`` and these conv settings."""
    return DCN_LAYERS[cfg.type](in_channels, out_channels, kernel_size, stride=stride,
                                padding=padding, dilation=dilation, groups=groups,
                                deform_groups=cfg.deform_groups, bias=bias)


@contextlib.contextmanager
def portable_deform_convs(model: nn.Module) -> Iterator[int]:
    """Within the block, every deformable conv of ``model`` runs :func:`deform_conv2d_portable`
    (what an ONNX graph can hold); afterwards each runs the kernel it ran before. Yields how
    many it switched."""
    packs = [m for m in model.modules() if isinstance(m, DeformConv2dPack)]
    before = [p.kernel for p in packs]
    for pack in packs:
        pack.kernel = "portable"
    try:
        yield len(packs)
    finally:
        for pack, kernel in zip(packs, before):
            pack.kernel = kernel
