"""Res2Net (Gao et al. 2019), as MMDetection 3.3's ``Res2Net``: ResNet-D with multi-scale blocks.

N images, s = ``scales``, w = ``floor(planes * base_width / base_channels)`` (26w: 26 at stage 1).
A block's 1x1 ``conv1`` gives s w channels, split into s groups x_1 .. x_s of w. Then
y_1 = K_1(x_1) and y_i = K_i(x_i + y_{i-1}) for i < s (3x3 convs ``convs.{i-1}``, each with
its norm ``bns.{i-1}`` and a ReLU), and y_s = x_s; the first block of a stage (``stage_type
"stage"``) skips the sums (y_i = K_i(x_i)) and, when it strides, average-pools x_s (``pool``,
3x3) instead. ``conv3`` maps cat(y_1 .. y_s) back to ``4 * planes``, plus the shortcut.

As MMDetection's: always pytorch style with the deep stem and average-pool shortcuts
(``stem.*``; every stage's first ``downsample`` is pool, 1x1 conv, norm), outputs as ResNet's
(256, 512, 1024, 2048 at strides 4 ... 32), ``dcn`` makes every ``convs.i`` deformable, and no
zero-initialised last norm (MMDetection's ResNet zero-inits only its own Bottleneck's).
``plugins`` are not taken (MMDetection builds the after-conv2 ones at the wrong width).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from detcli.errors import ConfigError
from detcli.models.backbones.resnet import ResNet, ResNetFamilyConfig
from detcli.models.dcn import DCNConfig, build_dcn
from detcli.models.layers import NormConfig, build_norm
from detcli.registry import BACKBONES


class Bottle2neck(nn.Module):
    """(N, C_in, H, W) -> (N, 4 planes, H / stride, W / stride); see the module docstring."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, *, stride: int = 1, dilation: int = 1,
                 norm_cfg: NormConfig, downsample: nn.Module | None = None, scales: int = 4,
                 base_width: int = 26, base_channels: int = 64, stage_type: str = "normal",
                 dcn: DCNConfig | None = None) -> None:
        super().__init__()
        width = math.floor(planes * base_width / base_channels)
        self.width, self.scales, self.stage_type, self.stride = width, scales, stage_type, stride
        self.conv1 = nn.Conv2d(inplanes, width * scales, 1, bias=False)
        self.bn1 = build_norm(norm_cfg, width * scales)[1]
        if stage_type == "stage" and stride != 1:
            self.pool = nn.AvgPool2d(kernel_size=3, stride=stride, padding=1)
        convs: list[nn.Module] = []
        for _ in range(scales - 1):
            if dcn is None or dcn.fallback_on_stride:
                convs.append(nn.Conv2d(width, width, 3, stride=stride, padding=dilation,
                                       dilation=dilation, bias=False))
            else:
                convs.append(build_dcn(dcn, width, width, 3, stride=stride, padding=dilation,
                                       dilation=dilation))
        self.convs = nn.ModuleList(convs)
        self.bns = nn.ModuleList(build_norm(norm_cfg, width)[1] for _ in range(scales - 1))
        self.conv3 = nn.Conv2d(width * scales, planes * self.expansion, 1, bias=False)
        self.bn3 = build_norm(norm_cfg, planes * self.expansion)[1]
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        groups = torch.split(self.relu(self.bn1(self.conv1(x))), self.width, 1)  # s x (N, w, H, W)
        sp = self.relu(self.bns[0](self.convs[0](groups[0].contiguous())))
        outs = [sp]
        for i in range(1, self.scales - 1):
            sp = groups[i] if self.stage_type == "stage" else sp + groups[i]
            sp = self.relu(self.bns[i](self.convs[i](sp.contiguous())))
            outs.append(sp)
        last = groups[-1]
        if self.stage_type == "stage" and self.stride != 1:
            last = self.pool(last)
        out = self.bn3(self.conv3(torch.cat(outs + [last], 1)))  # (N, 4 planes, H', W')
        return self.relu(out + identity)


class Res2NetConfig(ResNetFamilyConfig):
    """Res2Net settings: ResNet's (depth 50/101/152, pytorch style) plus scales, base_width."""

    type: Literal["Res2Net"] = "Res2Net"
    depth: Literal[50, 101, 152] = 50  # type: ignore[assignment]
    scales: int = Field(4, ge=2)
    base_width: int = Field(26, ge=1)

    @model_validator(mode="after")
    def _pytorch_style_without_plugins(self) -> Res2NetConfig:
        if self.style != "pytorch":
            raise ValueError("Res2Net is pytorch style only (MMDetection's forces it)")
        if self.plugins:
            raise ValueError("Res2Net takes no plugins")
        return self


@BACKBONES.register(Res2NetConfig)
class Res2Net(ResNet):
    """Res2Net returning the stages in ``out_indices``; every other keyword is ResNet's."""

    def __init__(self, *, scales: int = 4, base_width: int = 26,
                 style: Literal["pytorch", "caffe"] = "pytorch", **resnet_options: object) -> None:
        if scales < 2:
            raise ConfigError("Res2Net: scales must be >= 2 (1 is a ResNet)")
        if style != "pytorch" or resnet_options.get("plugins"):
            raise ConfigError("Res2Net: pytorch style only, and no plugins")
        self.scales = scales
        self.res2_width = base_width
        super().__init__(deep_stem=True, avg_down=True, **resnet_options)  # type: ignore[arg-type]

    def make_stage(self, block: object, inplanes: int, planes: int, num_blocks: int,
                   **options: object) -> nn.Sequential:
        """MMDetection's ``Res2Layer``: an average-pool shortcut; the first block "stage"."""
        stride, norm_cfg = int(options["stride"]), options["norm_cfg"]
        assert isinstance(norm_cfg, NormConfig)
        downsample = None
        if stride != 1 or inplanes != planes * Bottle2neck.expansion:
            downsample = nn.Sequential(
                nn.AvgPool2d(kernel_size=stride, stride=stride, ceil_mode=True,
                             count_include_pad=False),
                nn.Conv2d(inplanes, planes * Bottle2neck.expansion, 1, bias=False),
                build_norm(norm_cfg, planes * Bottle2neck.expansion)[1])
        common = dict(dilation=int(options["dilation"]), norm_cfg=norm_cfg, scales=self.scales,
                      base_width=self.res2_width, base_channels=int(options["base_channels"]),
                      dcn=options["dcn"])
        blocks = [Bottle2neck(inplanes, planes, stride=stride, downsample=downsample,
                              stage_type="stage", **common)]  # type: ignore[arg-type]
        blocks += [Bottle2neck(planes * Bottle2neck.expansion, planes, **common)  # type: ignore[arg-type]
                   for _ in range(1, num_blocks)]
        return nn.Sequential(*blocks)
