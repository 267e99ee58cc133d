"""ChannelMapper: one conv per backbone level to a common width (MMDetection 3.3 semantics).

N images, L_in input levels, O = ``num_outs`` outputs (>= L_in), C = ``out_channels``.

Each input level i gets a ``kernel_size`` conv (padding ``(k - 1) // 2``, so sizes are kept)
-> optional norm -> optional activation (``convs.i``); when O > L_in, stride-2 3x3 convs
(``extra_convs.j``) append levels, the first reading the last *input* map, later ones the
previous output. DETR uses it as a 1x1 projection of ResNet's C5 (2048 -> 256, no norm, no
activation). Weights start as MMDetection's: Xavier-uniform convs, zero biases.
"""

from __future__ import annotations

from typing import Literal, Sequence

from pydantic import Field, model_validator
from torch import Tensor, nn

from detcli.config.schema import Maybe, derive_or_check
from detcli.models.channels import NeckSchema, require_in_channels
from detcli.models.layers import ActConfig, ConvModule, NormConfig, xavier_init
from detcli.registry import NECKS


class ChannelMapperConfig(NeckSchema):
    """ChannelMapper settings. ``in_channels`` is derived from the backbone; set it only to
    assert it. ``num_outs`` None: one output per input level."""

    type: Literal["ChannelMapper"] = "ChannelMapper"
    in_channels: Maybe[list[int]] = None
    out_channels: int = Field(256, ge=1)
    kernel_size: int = Field(3, ge=1)
    norm_cfg: Maybe[NormConfig] = None
    act_cfg: Maybe[ActConfig] = Field(default_factory=ActConfig)
    bias: bool | Literal["auto"] = "auto"
    num_outs: Maybe[int] = Field(None, ge=1)

    @model_validator(mode="after")
    def _outs_cover_inputs(self) -> ChannelMapperConfig:
        if self.in_channels is not None:
            self._check_outs(len(self.in_channels))
        return self

    def _check_outs(self, num_ins: int) -> None:
        if self.num_outs is not None and self.num_outs < num_ins:
            raise ValueError(f"num_outs {self.num_outs} is less than the {num_ins} input "
                             "levels: ChannelMapper maps every input level")

    def connect(self, in_channels: list[int], source: str, where: str) -> list[int]:
        """``in_channels`` derived from (or checked against) the backbone's -> O outputs of
        ``out_channels`` each."""
        derive_or_check(self, "in_channels", list(in_channels), source, f"{where}.in_channels")
        self._check_outs(len(in_channels))
        return [self.out_channels] * (self.num_outs or len(in_channels))


@NECKS.register(ChannelMapperConfig)
class ChannelMapper(nn.Module):
    """L_in maps (N, C_i, H_i, W_i) -> O maps of C channels (module docstring)."""

    def __init__(self, *, in_channels: Sequence[int] | None, out_channels: int = 256,
                 kernel_size: int = 3, norm_cfg: NormConfig | None = None,
                 act_cfg: ActConfig | None, bias: bool | Literal["auto"] = "auto",
                 num_outs: int | None = None) -> None:
        super().__init__()
        self.in_channels = list(require_in_channels("ChannelMapper", in_channels,
                                                    "backbone's outputs"))
        num_outs = num_outs or len(self.in_channels)
        conv = dict(norm_cfg=norm_cfg, bias=bias, inplace=False,
                    activation=None if act_cfg is None else act_cfg.type)
        self.convs = nn.ModuleList(
            ConvModule(c, out_channels, kernel_size, padding=(kernel_size - 1) // 2, **conv)
            for c in self.in_channels)
        self.extra_convs = nn.ModuleList(
            ConvModule(self.in_channels[-1] if i == 0 else out_channels, out_channels, 3,
                       stride=2, padding=1, **conv)
            for i in range(num_outs - len(self.in_channels)))
        self.init_weights()

    def init_weights(self) -> None:
        """MMDetection's init: Xavier-uniform convs, zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                xavier_init(m, distribution="uniform")

    def forward(self, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        if len(inputs) != len(self.convs):
            raise ValueError(f"ChannelMapper expects {len(self.convs)} feature maps "
                             f"(in_channels {self.in_channels}), got {len(inputs)}")
        outs = [conv(x) for conv, x in zip(self.convs, inputs)]
        for i, conv in enumerate(self.extra_convs):
            outs.append(conv(inputs[-1] if i == 0 else outs[-1]))
        return tuple(outs)
