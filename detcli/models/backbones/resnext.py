"""ResNeXt (Xie et al. 2017): ResNet bottlenecks whose 3x3 conv is grouped, as MMDetection 3.3's.

A bottleneck of stage i (``planes = base_channels * 2**i``) has ``width =
floor(planes * base_width / base_channels) * groups`` channels in its 1x1 reduce and grouped
3x3 conv (``groups`` groups of ``width / groups``), and expands to ``4 * planes`` as ResNet does,
so the outputs have ResNet's channels (256, 512, 1024, 2048 at base 64). ``groups = 64,
base_width = 4`` is "64x4d" (stage 1 width 256), ``32, 4`` is "32x4d" (128).

Names are ResNet's and torchvision's (``layer1.0.conv2.weight`` of shape (width, width /
groups, 3, 3)): torchvision's ``resnext50_32x4d``, ``resnext101_32x8d`` and
``resnext101_64x4d`` ImageNet weights load as ``torchvision://NAME`` with no conversion
(torchvision's width rule is the same at ``base_channels = 64``). MMDetection's ResNeXt configs
start from ``open-mmlab://resnext101_64x4d`` (the same layout; a local copy of that file loads
as well).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from detcli.models.backbones.resnet import ResNet, ResNetConfig
from detcli.registry import BACKBONES


# (depth, groups, base_width) -> the ImageNet files of that design (pytorch style)
RESNEXT_WEIGHTS = {
    (50, 32, 4): ["torchvision://resnext50_32x4d"],
    (101, 32, 8): ["torchvision://resnext101_32x8d"],
    (101, 64, 4): ["torchvision://resnext101_64x4d", "open-mmlab://resnext101_64x4d"],
    (101, 32, 4): ["open-mmlab://resnext101_32x4d"],
}


class ResNeXtConfig(ResNetConfig):
    """ResNeXt settings: ResNet's plus ``groups`` and ``base_width`` (bottleneck depths only)."""

    type: Literal["ResNeXt"] = "ResNeXt"  # type: ignore[assignment]
    depth: Literal[50, 101, 152] = 50  # type: ignore[assignment]
    groups: int = Field(1, ge=1)
    base_width: int = Field(4, ge=1)

    def weights(self) -> list[str]:
        """torchvision's and MMCV's ResNeXt ImageNet files of this depth and grouping."""
        if not super().weights() or self.style != "pytorch":
            return []
        return RESNEXT_WEIGHTS.get((self.depth, self.groups, self.base_width), [])

    def label(self) -> str:
        """``ResNeXt-101 64x4d``, plus ResNet's style/DCN/width notes."""
        return super().label().replace(f"-{self.depth}",
                                       f"-{self.depth} {self.groups}x{self.base_width}d", 1)


@BACKBONES.register(ResNeXtConfig)
class ResNeXt(ResNet):
    """A :class:`ResNet` of grouped bottlenecks; takes every ResNet keyword besides these two."""

    def __init__(self, *, groups: int = 1, base_width: int = 4,
                 **resnet_options: object) -> None:
        self.groups = groups  # read by ResNet.__init__ when it builds the stages
        self.base_width = base_width
        super().__init__(**resnet_options)  # type: ignore[arg-type]
