"""Cross Stage Partial blocks shared by the CSPNeXt backbone and the CSPNeXtPAFPN neck (RTMDet).

N images, C channels, H x W a feature map; ``mid = int(C_out * expand_ratio)``.

As MMDetection 3.3's ``mmdet/models/layers/csp_layer.py`` (and its ``SPPBottleneck`` and
``ChannelAttention``), with its submodule names so its checkpoints load strictly:

- :class:`CSPNeXtBlock` (``conv1``, ``conv2``): a 3 x 3 ConvModule, then a 5 x 5
  depthwise-separable one, plus the input when ``add_identity`` and the channels agree;
- :class:`CSPLayer` (``main_conv``, ``short_conv``, ``blocks``, ``attention``, ``final_conv``):
  two 1 x 1 branches C_in -> mid, the main one through ``num_blocks`` blocks, concatenated
  (main first) to 2 mid channels, optionally reweighted by :class:`ChannelAttention`, and a
  1 x 1 conv to C_out;
- :class:`ChannelAttention` (``fc``): x * hardsigmoid(fc(global average of x)), per channel;
- :class:`SPPBottleneck` (``conv1``, ``poolings``, ``conv2``): 1 x 1 to C/2, the map and its
  stride-1 max-pools (5, 9, 13) concatenated, 1 x 1 to C_out (YOLO's spatial pyramid pooling).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from detcli.models.layers import ConvModule, DepthwiseSeparableConvModule, NormConfig, conv_module


class ChannelAttention(nn.Module):
    """(N, C, H, W) -> the same map times a per-channel weight in [0, 1] (N, C, 1, 1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(channels, channels, 1, 1, 0, bias=True)
        self.act = nn.Hardsigmoid(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            pooled = self.global_avgpool(x)  # (N, C, 1, 1)
        return x * self.act(self.fc(pooled))


class CSPNeXtBlock(nn.Module):
    """(N, C_in, H, W) -> (N, C_out, H, W): 3 x 3 conv to ``int(C_out * expansion)``, then a
    ``kernel_size`` depthwise-separable conv to C_out, plus the input when ``add_identity``."""

    def __init__(self, in_channels: int, out_channels: int, *, expansion: float = 0.5,
                 add_identity: bool = True, use_depthwise: bool = False, kernel_size: int = 5,
                 norm_cfg: NormConfig, activation: str) -> None:
        super().__init__()
        hidden = int(out_channels * expansion)
        self.conv1 = conv_module(use_depthwise, in_channels, hidden, 3, padding=1,
                                 norm_cfg=norm_cfg, activation=activation)
        self.conv2 = DepthwiseSeparableConvModule(
            hidden, out_channels, kernel_size, padding=kernel_size // 2, norm_cfg=norm_cfg,
            activation=activation)
        self.add_identity = add_identity and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(self.conv1(x))
        return out + x if self.add_identity else out


class CSPLayer(nn.Module):
    """(N, C_in, H, W) -> (N, C_out, H, W); see the module docstring."""

    def __init__(self, in_channels: int, out_channels: int, *, expand_ratio: float = 0.5,
                 num_blocks: int = 1, add_identity: bool = True, use_depthwise: bool = False,
                 channel_attention: bool = False, norm_cfg: NormConfig,
                 activation: str) -> None:
        super().__init__()
        mid = int(out_channels * expand_ratio)
        self.channel_attention = channel_attention
        self.main_conv = ConvModule(in_channels, mid, 1, norm_cfg=norm_cfg, activation=activation)
        self.short_conv = ConvModule(in_channels, mid, 1, norm_cfg=norm_cfg,
                                     activation=activation)
        self.final_conv = ConvModule(2 * mid, out_channels, 1, norm_cfg=norm_cfg,
                                     activation=activation)
        self.blocks = nn.Sequential(*[
            CSPNeXtBlock(mid, mid, expansion=1.0, add_identity=add_identity,
                         use_depthwise=use_depthwise, norm_cfg=norm_cfg, activation=activation)
            for _ in range(num_blocks)])
        if channel_attention:
            self.attention = ChannelAttention(2 * mid)

    def forward(self, x: Tensor) -> Tensor:
        short = self.short_conv(x)  # (N, mid, H, W)
        main = self.blocks(self.main_conv(x))  # (N, mid, H, W)
        both = torch.cat((main, short), dim=1)  # (N, 2 mid, H, W)
        if self.channel_attention:
            both = self.attention(both)
        return self.final_conv(both)


class SPPBottleneck(nn.Module):
    """(N, C_in, H, W) -> (N, C_out, H, W): spatial pyramid pooling at stride 1."""

    def __init__(self, in_channels: int, out_channels: int, *,
                 kernel_sizes: Sequence[int] = (5, 9, 13), norm_cfg: NormConfig,
                 activation: str) -> None:
        super().__init__()
        mid = in_channels // 2
        self.conv1 = ConvModule(in_channels, mid, 1, norm_cfg=norm_cfg, activation=activation)
        self.poolings = nn.ModuleList([nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)
                                       for k in kernel_sizes])
        self.conv2 = ConvModule(mid * (len(kernel_sizes) + 1), out_channels, 1,
                                norm_cfg=norm_cfg, activation=activation)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)  # (N, C_in / 2, H, W)
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = torch.cat([x] + [pool(x) for pool in self.poolings], dim=1)  # (N, 2 C_in, H, W)
        return self.conv2(x)
