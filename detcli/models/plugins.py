"""Blocks a ResNet-family bottleneck can insert after its convs: MMDetection's ``plugins`` key.

N images, C channels, H x W map (P = H W positions), C' = ``int(C * ratio)``.

``plugins = [{cfg = {type = "ContextBlock", ratio = 0.0625}, stages = [false, true, true, true],
position = "after_conv3"}]`` puts a block into every bottleneck of the chosen stages (all
stages without ``stages``), after ``conv1``, ``conv2`` or ``conv3`` (and its norm), reading
that conv's channels. Its attribute is MMCV's abbreviation plus ``cfg.postfix``
(``context_block``, ``context_block1``): two blocks of one type at one position need postfixes.
The blocks (``cfg.type``): ``ContextBlock`` (here), ``GeneralizedAttention``
(``gen_attention_block``, :mod:`detcli.models.generalized_attention`) and ``NonLocal2d``
(``nonlocal_block``, :mod:`detcli.models.non_local`).

:class:`ContextBlock` (GCNet, Cao et al. 2019), as MMCV's: a context vector (N, C, 1, 1) pooled
over positions with softmax weights from ``conv_mask`` (``pooling_type = "att"``) or by
averaging (``"avg"``), then ``out = x * sigmoid(channel_mul_conv(ctx)) + channel_add_conv(ctx)``
for the ``fusion_types`` present, each transform being 1x1 conv C -> C', LayerNorm, ReLU,
1x1 conv C' -> C. Init (MMCV's ``reset_parameters``): ``conv_mask`` Kaiming (fan_in), the last
conv of each transform zero, so a new block adds nothing. Inside a ResNet the backbone's own
init then makes every conv Kaiming (fan_out), the plugins' included, as in MMDetection 3.3
(whose ResNet init_cfg reaches them too: checked on its ResNet-50 with a GC block, whose
``channel_add_conv`` ends non-zero).
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

import torch
from pydantic import Field, field_validator
from torch import Tensor, nn

from detcli.config.schema import Maybe, Schema
from detcli.errors import ConfigError
from detcli.models.generalized_attention import GeneralizedAttention, GeneralizedAttentionConfig
from detcli.models.layers import constant_init, kaiming_init
from detcli.models.non_local import NonLocal2d, NonLocal2dConfig

Position = Literal["after_conv1", "after_conv2", "after_conv3"]


class ContextBlockConfig(Schema):
    """MMCV's ``ContextBlock`` (its ``in_channels`` is the conv's it follows)."""

    type: Literal["ContextBlock"] = "ContextBlock"
    ratio: float = Field(gt=0)
    pooling_type: Literal["att", "avg"] = "att"
    fusion_types: list[Literal["channel_add", "channel_mul"]] = Field(
        default_factory=lambda: ["channel_add"], min_length=1)
    postfix: int | str = ""


PluginBlockConfig = Annotated[
    Union[ContextBlockConfig, GeneralizedAttentionConfig, NonLocal2dConfig],
    Field(discriminator="type")]


class PluginConfig(Schema):
    """One entry of ``plugins``: the block, the stages that get it, where in the bottleneck."""

    cfg: PluginBlockConfig
    stages: Maybe[list[bool]] = None  # None: every stage
    position: Position

    @field_validator("stages")
    @classmethod
    def _some_stage(cls, stages: list[bool] | None) -> list[bool] | None:
        if stages is not None and not stages:
            raise ValueError("stages must have one entry per backbone stage")
        return stages


def _transform(channels: int, planes: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, planes, 1), nn.LayerNorm([planes, 1, 1]),
                         nn.ReLU(inplace=True), nn.Conv2d(planes, channels, 1))


class ContextBlock(nn.Module):
    """GCNet's global context block: (N, C, H, W) -> (N, C, H, W)."""

    abbr = "context_block"

    def __init__(self, in_channels: int, *, ratio: float, pooling_type: str = "att",
                 fusion_types: tuple[str, ...] | list[str] = ("channel_add",)) -> None:
        super().__init__()
        planes = int(in_channels * ratio)
        if planes < 1:
            raise ConfigError(f"ContextBlock: ratio {ratio} of {in_channels} channels leaves "
                              "no channel for the transform; use a larger ratio")
        self.pooling_type = pooling_type
        if pooling_type == "att":
            self.conv_mask = nn.Conv2d(in_channels, 1, kernel_size=1)
            self.softmax = nn.Softmax(dim=2)
        else:
            self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.channel_add_conv = _transform(in_channels, planes) if "channel_add" in fusion_types else None
        self.channel_mul_conv = _transform(in_channels, planes) if "channel_mul" in fusion_types else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.pooling_type == "att":
            kaiming_init(self.conv_mask, mode="fan_in")
        for transform in (self.channel_add_conv, self.channel_mul_conv):
            if transform is not None:
                constant_init(transform[-1], 0.0)

    def spatial_pool(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> the context (N, C, 1, 1)."""
        n, c, h, w = x.shape
        if self.pooling_type != "att":
            return self.avg_pool(x)
        # reshape, not view: in a strided x (a W slice, transposed H and W) H and W do not
        # merge into one dim; channels_last and contiguous x still pass without a copy
        weights = self.softmax(self.conv_mask(x).reshape(n, 1, h * w))  # (N, 1, P), sums to 1
        context = torch.matmul(x.reshape(n, 1, c, h * w), weights.unsqueeze(-1))  # (N, 1, C, 1)
        return context.reshape(n, c, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        context = self.spatial_pool(x)
        out = x
        if self.channel_mul_conv is not None:
            out = out * torch.sigmoid(self.channel_mul_conv(context))
        if self.channel_add_conv is not None:
            out = out + self.channel_add_conv(context)
        return out


    @classmethod
    def from_config(cls, cfg: ContextBlockConfig, in_channels: int) -> ContextBlock:
        return cls(in_channels, ratio=cfg.ratio, pooling_type=cfg.pooling_type,
                   fusion_types=tuple(cfg.fusion_types))


PLUGIN_BLOCKS: dict[str, type[ContextBlock] | type[GeneralizedAttention] | type[NonLocal2d]] = {
    "ContextBlock": ContextBlock,
    "GeneralizedAttention": GeneralizedAttention,
    "NonLocal2d": NonLocal2d,
}


def build_plugin(cfg: PluginBlockConfig, in_channels: int) -> tuple[str, nn.Module]:
    """(attribute name, block) for ``cfg`` after a conv with ``in_channels`` outputs."""
    block_type = PLUGIN_BLOCKS[cfg.type]
    return f"{block_type.abbr}{cfg.postfix}", block_type.from_config(cfg, in_channels)
