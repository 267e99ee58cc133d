"""MobileNetV2 (Sandler et al. 2018), as MMDetection 3.3's ``MobileNetV2``.

N images, H x W input, ``widen_factor`` alpha. Layout (MMDetection's names):

- ``conv1``: a 3x3 stride-2 ConvModule (conv, BN, ReLU6) 3 -> d(32 alpha);
- ``layer1`` ... ``layer7``: inverted residual blocks, MMDetection's ``arch_settings`` (expand
  ratio t, channels c, blocks n, stride s of the first block): (1, 16, 1, 1), (6, 24, 2, 2),
  (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1). A block is
  ``expand_conv`` (1x1 to ``round(C_in t)``, absent when t = 1), ``depthwise_conv`` (3x3,
  one group per channel, the block's stride), ``linear_conv`` (1x1 to d(c alpha), no
  activation), plus the input when the stride is 1 and the channels agree;
- ``conv2``: a 1x1 ConvModule to 1280 (``int(1280 alpha)`` when alpha > 1).

d(v) rounds to the nearest multiple of 8, never below 8 nor 10 % under v (``make_divisible``).
Output indices 0 ... 6 are ``layer1`` ... ``layer7``, 7 is ``conv2``; the default (1, 2, 4, 7)
gives 24, 32, 96, 1280 channels at strides 4, 8, 16, 32.

``init_cfg.checkpoint = "torchvision://mobilenet_v2"`` loads torchvision's ImageNet weights
converted from its ``features.{k}`` layout (:func:`mobilenet_v2_from_torchvision`); a
checkpoint in MMDetection's layout (``open-mmlab://mmdet/mobilenet_v2``'s file) loads as is.
"""

from __future__ import annotations

import re
from typing import Literal, Mapping, Sequence

from pydantic import Field, model_validator
from torch import Tensor, nn

from detcli.errors import ConfigError
from detcli.config.schema import Maybe
from detcli.models.backbones.freezing import FrozenStagesBackbone, freeze
from detcli.models.channels import BackboneSchema
from detcli.models.layers import ActConfig, ConvModule, NormConfig, constant_init, is_norm, kaiming_init
from detcli.models.pretrained import PretrainedInit, load_state, read_checkpoint
from detcli.registry import BACKBONES

# (expand ratio, channels, blocks, stride of the first block) per layer
ARCH_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                 (6, 160, 3, 2), (6, 320, 1, 1))


def make_divisible(value: float, divisor: int = 8, min_ratio: float = 0.9) -> int:
    """The multiple of ``divisor`` nearest ``value``, at least ``divisor`` and not below
    ``min_ratio * value`` (MMDetection's ``make_divisible``)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < min_ratio * value else new


def mobilenet_v2_channels(widen_factor: float) -> list[int]:
    """Channels of output indices 0 ... 7."""
    last = int(1280 * widen_factor) if widen_factor > 1.0 else 1280
    return [make_divisible(c * widen_factor) for _, c, _, _ in ARCH_SETTINGS] + [last]


def relu6() -> ActConfig:
    return ActConfig(type="ReLU6")


class MobileNetV2Config(BackboneSchema):
    """MobileNetV2 settings (MMDetection 3.3's names and defaults)."""

    type: Literal["MobileNetV2"] = "MobileNetV2"
    widen_factor: float = Field(1.0, gt=0)
    out_indices: list[int] = Field(default_factory=lambda: [1, 2, 4, 7])
    frozen_stages: int = Field(-1, ge=-1, le=7)
    norm_cfg: NormConfig = Field(default_factory=NormConfig)
    act_cfg: ActConfig = Field(default_factory=relu6)
    norm_eval: bool = False
    init_cfg: Maybe[PretrainedInit] = None

    @model_validator(mode="after")
    def _indices_in_range(self) -> MobileNetV2Config:
        if not self.out_indices or any(not 0 <= i <= 7 for i in self.out_indices):
            raise ValueError(f"out_indices {self.out_indices} must be non-empty, each in [0, 7]")
        return self

    def out_channels(self) -> list[int]:
        channels = mobilenet_v2_channels(self.widen_factor)
        return [channels[i] for i in self.out_indices]

    def label(self) -> str:
        """``MobileNetV2``, ``MobileNetV2 (x0.5)``."""
        return "MobileNetV2" + ("" if self.widen_factor == 1.0 else f" (x{self.widen_factor:g})")

    def weights(self) -> list[str]:
        """torchvision's ``mobilenet_v2`` at width 1 (converted on load)."""
        return ["torchvision://mobilenet_v2"] if self.widen_factor == 1.0 else []


class InvertedResidual(nn.Module):
    """(N, C_in, H, W) -> (N, C_out, H / s, W / s): expand 1x1, depthwise 3x3, linear 1x1."""

    def __init__(self, in_channels: int, out_channels: int, *, mid_channels: int, stride: int,
                 norm_cfg: NormConfig, activation: str) -> None:
        super().__init__()
        self.with_res_shortcut = stride == 1 and in_channels == out_channels
        self.with_expand_conv = mid_channels != in_channels
        if self.with_expand_conv:
            self.expand_conv = ConvModule(in_channels, mid_channels, 1, norm_cfg=norm_cfg,
                                          activation=activation)
        self.depthwise_conv = ConvModule(mid_channels, mid_channels, 3, stride=stride,
                                         padding=1, groups=mid_channels, norm_cfg=norm_cfg,
                                         activation=activation)
        self.linear_conv = ConvModule(mid_channels, out_channels, 1, norm_cfg=norm_cfg,
                                      activation=None)

    def forward(self, x: Tensor) -> Tensor:
        out = self.expand_conv(x) if self.with_expand_conv else x
        out = self.linear_conv(self.depthwise_conv(out))
        return x + out if self.with_res_shortcut else out


@BACKBONES.register(MobileNetV2Config)
class MobileNetV2(FrozenStagesBackbone):
    """MobileNetV2 returning the maps of ``out_indices``; ``frozen_stages = i`` stops the
    gradient of ``conv1`` and ``layer1`` ... ``layer{i}`` (those layers also in eval mode)."""

    def __init__(self, *, widen_factor: float = 1.0,
                 out_indices: Sequence[int] = (1, 2, 4, 7), frozen_stages: int = -1,
                 norm_cfg: NormConfig | None = None, act_cfg: ActConfig | None = None,
                 norm_eval: bool = False, init_cfg: PretrainedInit | None = None) -> None:
        super().__init__()
        if not out_indices or any(not 0 <= i <= 7 for i in out_indices):
            raise ConfigError(f"MobileNetV2: out_indices {list(out_indices)} must be in [0, 7]")
        norm_cfg = norm_cfg or NormConfig()
        activation = (act_cfg or relu6()).type
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.init_cfg = init_cfg
        channels = mobilenet_v2_channels(widen_factor)
        in_channels = make_divisible(32 * widen_factor)
        self.conv1 = ConvModule(3, in_channels, 3, stride=2, padding=1, norm_cfg=norm_cfg,
                                activation=activation)
        for i, (expand, _, num_blocks, stride) in enumerate(ARCH_SETTINGS):
            blocks = []
            for j in range(num_blocks):
                blocks.append(InvertedResidual(
                    in_channels, channels[i], mid_channels=int(round(in_channels * expand)),
                    stride=stride if j == 0 else 1, norm_cfg=norm_cfg, activation=activation))
                in_channels = channels[i]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.conv2 = ConvModule(in_channels, channels[7], 1, norm_cfg=norm_cfg,
                                activation=activation)
        self.out_channels = [channels[i] for i in self.out_indices]
        self.reset_parameters()
        self._freeze_stages()

    @property
    def stages(self) -> list[nn.Module]:
        """Output indices 0 ... 7: ``layer1`` ... ``layer7``, ``conv2``."""
        return [getattr(self, f"layer{i + 1}") for i in range(7)] + [self.conv2]

    def reset_parameters(self) -> None:
        """MMDetection's init: Kaiming (fan_out) convs, unit norms."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                kaiming_init(m)
            elif is_norm(m):
                constant_init(m, 1.0)

    def init_weights(self) -> None:
        """Load ``init_cfg``'s checkpoint, converting torchvision's layout when it has it."""
        if self.init_cfg is None:
            return
        state = read_checkpoint(self.init_cfg.checkpoint)
        if any(k.startswith("features.") for k in state):
            state = mobilenet_v2_from_torchvision(state)
        load_state(self, state, self.init_cfg.checkpoint)

    def _freeze_stages(self) -> None:
        if self.frozen_stages >= 0:  # MMDetection stops conv1's gradient, keeps its mode
            for param in self.conv1.parameters():
                param.requires_grad = False
        for layer in self.stages[: max(self.frozen_stages, 0)]:
            freeze(layer)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        x = self.conv1(x)  # (N, d(32 alpha), H/2, W/2)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)


_FEATURE_KEY = re.compile(r"^features\.(\d+)\.(.+)$")


def _torchvision_feature_names() -> dict[int, str]:
    """torchvision's ``features.{k}`` index -> det's module prefix (``layer2.1``, ``conv2``)."""
    names = {0: "conv1"}
    k = 1
    for i, (_, _, num_blocks, _) in enumerate(ARCH_SETTINGS):
        for j in range(num_blocks):
            names[k] = f"layer{i + 1}.{j}"
            k += 1
    names[k] = "conv2"
    return names


def mobilenet_v2_from_torchvision(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """torchvision's ``mobilenet_v2`` state dict -> det's (MMDetection's) names.

    ``features.0.{0,1}`` -> ``conv1.{conv,bn}``, ``features.18.{0,1}`` -> ``conv2.{conv,bn}``;
    block ``features.k`` -> ``layer{i}.{j}``, where its ``conv`` Sequential is [expand (0.0,
    0.1), depthwise (1.0, 1.1), linear conv (2), its BN (3)] or, for the first block (no
    expansion), [depthwise (0.0, 0.1), linear conv (1), BN (2)]. ``classifier.*`` dropped."""
    prefixes = _torchvision_feature_names()
    expands = {k for k in prefixes if any(key.startswith(f"features.{k}.conv.3.") for key in state)}
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        match = _FEATURE_KEY.match(key)
        if key.startswith("classifier.") or match is None:
            if not key.startswith("classifier."):
                out[key] = value
            continue
        k, rest = int(match.group(1)), match.group(2)
        prefix = prefixes.get(k, f"features.{k}")
        if prefix in ("conv1", "conv2"):
            rest = re.sub(r"^0\.", "conv.", re.sub(r"^1\.", "bn.", rest))
        else:
            parts = (["expand_conv"] if k in expands else []) + ["depthwise_conv"]
            for index, name in enumerate(parts):
                rest = re.sub(rf"^conv\.{index}\.0\.", f"{name}.conv.", rest)
                rest = re.sub(rf"^conv\.{index}\.1\.", f"{name}.bn.", rest)
            rest = re.sub(rf"^conv\.{len(parts)}\.", "linear_conv.conv.", rest)
            rest = re.sub(rf"^conv\.{len(parts) + 1}\.", "linear_conv.bn.", rest)
        out[f"{prefix}.{rest}"] = value
    return out
