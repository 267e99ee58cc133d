"""ConvNeXt (Liu et al. 2022), as mmpretrain's ``ConvNeXt`` (MMDetection 3.3's configs use it as
``mmpretrain.ConvNeXt``; here ``type = "ConvNeXt"``).

N images, H x W input, C_i the channels of stage i (tiny: 96, 192, 384, 768).

Layout (mmpretrain's names): ``downsample_layers.0`` is the stem (a 4x4 stride-4 conv, then a
LayerNorm over channels), ``downsample_layers.i`` (i >= 1) a channel LayerNorm then a 2x2
stride-2 conv; ``stages.i.j`` a block: 7x7 depthwise conv (``depthwise_conv``), LayerNorm
(``norm``), Linear C -> 4C (``pointwise_conv1``), GELU, Linear 4C -> C (``pointwise_conv2``),
times the per-channel layer scale ``gamma``, plus the input (stochastic depth on that branch
while training, its rate rising linearly to ``drop_path_rate`` over all blocks). Output i is
``norm{i}`` (a channel LayerNorm) of stage i, at stride ``4 * 2**i``.

``init_cfg.checkpoint = "torchvision://convnext_tiny"`` (``_small``, ``_base``, ``_large``) loads
torchvision's ImageNet weights converted from its ``features.{k}`` layout
(:func:`convnext_from_torchvision`; ``layer_scale`` (C, 1, 1) becomes ``gamma`` (C,));
torchvision has no ``norm{i}`` for the outputs, which keep their init (weight 1, bias 0) and
are reported missing. The names follow mmpretrain's source; unlike the other backbones they are
not pinned by an MMDetection fixture (the reference install has no mmpretrain).
"""

from __future__ import annotations

import re
from typing import Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from detcli.config.schema import Maybe, Schema
from detcli.errors import ConfigError
from detcli.models.backbones.freezing import freeze
from detcli.models.channels import BackboneSchema
from detcli.models.layers import drop_path, drop_path_rates
from detcli.models.pretrained import PretrainedInit, load_state, read_checkpoint
from detcli.registry import BACKBONES

ARCHS: dict[str, tuple[list[int], list[int]]] = {  # (depths, channels), mmpretrain's
    "tiny": ([3, 3, 9, 3], [96, 192, 384, 768]),
    "small": ([3, 3, 27, 3], [96, 192, 384, 768]),
    "base": ([3, 3, 27, 3], [128, 256, 512, 1024]),
    "large": ([3, 3, 27, 3], [192, 384, 768, 1536]),
}


class ConvNeXtArch(Schema):
    """A ConvNeXt design: blocks and channels per stage."""

    depths: list[int] = Field(min_length=1, max_length=4)
    channels: list[int] = Field(min_length=1, max_length=4)


class ConvNeXtConfig(BackboneSchema):
    """ConvNeXt settings (mmpretrain's names; defaults as MMDetection's ConvNeXt-T configs)."""

    type: Literal["ConvNeXt"] = "ConvNeXt"
    arch: Literal["tiny", "small", "base", "large"] | ConvNeXtArch = "tiny"
    in_channels: int = Field(3, ge=1)
    drop_path_rate: float = Field(0.0, ge=0, lt=1)
    layer_scale_init_value: float = Field(1e-6, ge=0)
    out_indices: list[int] = Field(default_factory=lambda: [0, 1, 2, 3])
    frozen_stages: int = Field(0, ge=0, le=4)
    init_cfg: Maybe[PretrainedInit] = None

    @model_validator(mode="after")
    def _consistent(self) -> ConvNeXtConfig:
        depths, channels = resolve_arch(self.arch)
        if len(depths) != len(channels):
            raise ValueError(f"arch depths {depths} and channels {channels} differ in length")
        if not self.out_indices or any(not 0 <= i < len(depths) for i in self.out_indices):
            raise ValueError(f"out_indices {self.out_indices} must be in [0, {len(depths)})")
        return self

    def out_channels(self) -> list[int]:
        channels = resolve_arch(self.arch)[1]
        return [channels[i] for i in self.out_indices]

    def label(self) -> str:
        return f"ConvNeXt-{self.arch if isinstance(self.arch, str) else 'custom'}"

    def weights(self) -> list[str]:
        """torchvision's ``convnext_{arch}`` of a named design (converted on load)."""
        if not isinstance(self.arch, str) or self.in_channels != 3:
            return []
        return [f"torchvision://convnext_{self.arch}"]


def resolve_arch(arch: str | ConvNeXtArch) -> tuple[list[int], list[int]]:
    """(depths, channels) of a named or given design."""
    if isinstance(arch, ConvNeXtArch):
        return arch.depths, arch.channels
    if arch not in ARCHS:
        raise ConfigError(f"ConvNeXt arch {arch!r} is not one of {', '.join(ARCHS)}")
    return ARCHS[arch]


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of (N, C, H, W) maps (mmpretrain's ``LN2d``, eps 1e-6)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                         self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """(N, C, H, W) -> (N, C, H, W): depthwise 7x7, LayerNorm, MLP (4C), layer scale, residual."""

    def __init__(self, channels: int, *, drop_path: float, layer_scale_init_value: float) -> None:
        super().__init__()
        self.depthwise_conv = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.pointwise_conv1 = nn.Linear(channels, 4 * channels)
        self.act = nn.GELU()
        self.pointwise_conv2 = nn.Linear(4 * channels, channels)
        self.gamma = (nn.Parameter(layer_scale_init_value * torch.ones(channels))
                      if layer_scale_init_value > 0 else None)
        self.drop_path = drop_path

    def forward(self, x: Tensor) -> Tensor:
        y = self.depthwise_conv(x).permute(0, 2, 3, 1)  # (N, H, W, C)
        y = self.pointwise_conv2(self.act(self.pointwise_conv1(self.norm(y))))
        y = y.permute(0, 3, 1, 2)  # (N, C, H, W)
        if self.gamma is not None:
            y = y * self.gamma.view(1, -1, 1, 1)
        return x + drop_path(y, self.drop_path, self.training)


@BACKBONES.register(ConvNeXtConfig)
class ConvNeXt(nn.Module):
    """ConvNeXt returning the normed stage outputs of ``out_indices``; ``frozen_stages = i``
    stops the gradient of (and puts in eval mode) ``downsample_layers.0..i-1`` and
    ``stages.0..i-1``."""

    def __init__(self, *, arch: str | ConvNeXtArch = "tiny", in_channels: int = 3,
                 drop_path_rate: float = 0.0, layer_scale_init_value: float = 1e-6,
                 out_indices: Sequence[int] = (0, 1, 2, 3), frozen_stages: int = 0,
                 init_cfg: PretrainedInit | None = None) -> None:
        super().__init__()
        depths, channels = resolve_arch(arch)
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.init_cfg = init_cfg
        rates = drop_path_rates(drop_path_rate, sum(depths))
        self.downsample_layers = nn.ModuleList()
        self.stages = nn.ModuleList()
        c_in = in_channels
        for i, (depth, c) in enumerate(zip(depths, channels)):
            if i == 0:
                self.downsample_layers.append(nn.Sequential(nn.Conv2d(c_in, c, 4, stride=4),
                                                            LayerNorm2d(c)))
            else:
                self.downsample_layers.append(nn.Sequential(LayerNorm2d(c_in),
                                                            nn.Conv2d(c_in, c, 2, stride=2)))
            start = sum(depths[:i])
            self.stages.append(nn.Sequential(*[
                ConvNeXtBlock(c, drop_path=rates[start + j],
                              layer_scale_init_value=layer_scale_init_value)
                for j in range(depth)]))
            if i in self.out_indices:
                self.add_module(f"norm{i}", LayerNorm2d(c))
            c_in = c
        self.out_channels = [channels[i] for i in self.out_indices]
        self.reset_parameters()
        self._freeze_stages()

    def reset_parameters(self) -> None:
        """mmpretrain's init: truncated normal (std 0.02) convs and linears, zero biases."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def init_weights(self) -> None:
        """Load ``init_cfg``'s checkpoint, converting torchvision's layout when it has it."""
        if self.init_cfg is None:
            return
        state = read_checkpoint(self.init_cfg.checkpoint)
        if any(k.startswith("features.") for k in state):
            state = convnext_from_torchvision(state)
        load_state(self, state, self.init_cfg.checkpoint)

    def _freeze_stages(self) -> None:
        for i in range(self.frozen_stages):
            freeze(self.downsample_layers[i])
            freeze(self.stages[i])

    def train(self, mode: bool = True) -> ConvNeXt:
        super().train(mode)
        self._freeze_stages()
        return self

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        outs = []
        for i, (down, stage) in enumerate(zip(self.downsample_layers, self.stages)):
            x = stage(down(x))  # (N, C_i, H / (4 * 2**i), W / (4 * 2**i))
            if i in self.out_indices:
                outs.append(getattr(self, f"norm{i}")(x))
        return tuple(outs)


_BLOCK = re.compile(r"^features\.(\d+)\.(\d+)\.(block\.[0235]|layer_scale)(.*)$")
_DOWN = re.compile(r"^features\.(\d+)\.([01])\.(.+)$")
BLOCK_PARTS = {"block.0": "depthwise_conv", "block.2": "norm", "block.3": "pointwise_conv1",
               "block.5": "pointwise_conv2", "layer_scale": "gamma"}


def convnext_from_torchvision(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """torchvision's ``convnext_*`` state dict -> det's (mmpretrain's) names.

    ``features.0`` -> ``downsample_layers.0``; ``features.{2k}`` -> ``downsample_layers.{k}``;
    ``features.{2k+1}.{j}.block.{0,2,3,5}`` -> ``stages.{k}.{j}.{depthwise_conv, norm,
    pointwise_conv1, pointwise_conv2}``, ``layer_scale`` -> ``gamma``; ``classifier.*``
    dropped."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith("classifier."):
            continue
        block = _BLOCK.match(key)
        if block and int(block.group(1)) % 2 == 1:
            k, j, part, rest = block.groups()
            if part == "layer_scale":
                value = value.reshape(-1)  # (C, 1, 1) -> (C,)
            out[f"stages.{int(k) // 2}.{j}.{BLOCK_PARTS[part]}{rest}"] = value
            continue
        down = _DOWN.match(key)
        if down and int(down.group(1)) % 2 == 0:
            k, index, rest = down.groups()
            out[f"downsample_layers.{int(k) // 2}.{index}.{rest}"] = value
            continue
        out[key] = value
    return out
