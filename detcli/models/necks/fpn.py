"""Feature Pyramid Network (Lin et al. 2017), MMDetection 2.x semantics and module names.

N images, L_in input levels (backbone outputs), L used levels ``[start_level, end)``, O outputs
(``num_outs``), C output channels, H_i x W_i the size of input level i.

Each used input level gets a 1x1 lateral conv (``lateral_convs.j``) to C channels; going
top-down, each lateral adds the nearest-upsampled lateral above it (``F.interpolate`` to the
lower level's size, so odd sizes work); a 3x3 conv (``fpn_convs.j``) smooths each sum. When
O > L, the extra levels come from stride-2 max-pooling of the last output
(``add_extra_convs = false``) or from stride-2 3x3 convs appended to ``fpn_convs``, the first
of which reads the last used backbone level (``"on_input"``, RetinaNet), the last lateral
(``"on_lateral"``) or the last output (``"on_output"``); later ones read the previous extra level.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import Tensor, nn

from detcli.config.schema import Maybe, derive_or_check
from detcli.models.channels import NeckSchema, require_in_channels
from detcli.models.layers import ConvModule, NormConfig, xavier_init
from detcli.registry import NECKS

ExtraConvs = Literal[False, "on_input", "on_lateral", "on_output"]


def fpn_levels_problem(num_ins: int, num_outs: int, start_level: int, end_level: int) -> str | None:
    """What is inconsistent in these level settings (MMDetection's asserts, as a message)."""
    if not 0 <= start_level < num_ins:
        return f"start_level {start_level} must be in [0, {num_ins}) for {num_ins} input levels"
    if end_level == -1:
        if num_outs < num_ins - start_level:
            return (f"num_outs {num_outs} is less than the {num_ins - start_level} input levels "
                    f"from start_level {start_level}; set end_level to drop levels")
        return None
    if not start_level < end_level <= num_ins:
        return f"end_level {end_level} (exclusive) must be -1 or in ({start_level}, {num_ins}]"
    if num_outs != end_level - start_level:
        return (f"num_outs {num_outs} must equal end_level - start_level = "
                f"{end_level - start_level} when end_level is set (no extra levels)")
    return None


class FPNConfig(NeckSchema):
    """FPN settings. ``in_channels`` is derived from the backbone; set it only to assert it."""

    # the level settings are checked against in_channels here, once known (written or derived)

    type: Literal["FPN"] = "FPN"
    in_channels: Maybe[list[int]] = None
    out_channels: int = Field(256, ge=1)
    num_outs: int = Field(5, ge=1)
    start_level: int = Field(0, ge=0)
    end_level: int = Field(-1, ge=-1)  # exclusive; -1 = through the last input level
    add_extra_convs: ExtraConvs = False
    relu_before_extra_convs: bool = False
    no_norm_on_lateral: bool = False
    norm_cfg: Maybe[NormConfig] = None
    upsample_mode: Literal["nearest", "bilinear"] = "nearest"

    @field_validator("add_extra_convs", mode="before")
    @classmethod
    def _true_is_on_input(cls, value: object) -> object:
        return "on_input" if value is True else value  # MMDetection: True means "on_input"

    @model_validator(mode="after")
    def _consistent_levels(self) -> FPNConfig:
        if self.in_channels is not None:
            self._check_levels(len(self.in_channels))
        return self

    def _check_levels(self, num_ins: int) -> None:
        problem = fpn_levels_problem(num_ins, self.num_outs, self.start_level, self.end_level)
        if problem:
            raise ValueError(problem)

    def connect(self, in_channels: list[int], source: str, where: str) -> list[int]:
        """``in_channels`` derived from (or checked against) the backbone's, the level settings
        checked against them -> O outputs of ``out_channels`` each."""
        derive_or_check(self, "in_channels", list(in_channels), source, f"{where}.in_channels")
        self._check_levels(len(in_channels))
        return [self.out_channels] * self.num_outs


@NECKS.register(FPNConfig)
class FPN(nn.Module):
    """Top-down feature pyramid; ``forward`` maps L_in feature maps to O maps of C channels.

    Built from a resolved :class:`FPNConfig` (its ``in_channels`` derived, its levels checked)
    or directly with settings that config accepts."""

    def __init__(
        self,
        *,
        in_channels: Sequence[int] | None,
        out_channels: int = 256,
        num_outs: int = 5,
        start_level: int = 0,
        end_level: int = -1,
        add_extra_convs: bool | ExtraConvs = False,
        relu_before_extra_convs: bool = False,
        no_norm_on_lateral: bool = False,
        norm_cfg: NormConfig | None = None,
        upsample_mode: Literal["nearest", "bilinear"] = "nearest",
    ) -> None:
        super().__init__()
        self.in_channels = list(require_in_channels("FPN", in_channels, "backbone's outputs"))
        self.add_extra_convs = "on_input" if add_extra_convs is True else add_extra_convs
        self.out_channels = out_channels
        self.num_outs = num_outs
        self.start_level = start_level
        self.backbone_end_level = len(self.in_channels) if end_level == -1 else end_level
        self.relu_before_extra_convs = relu_before_extra_convs
        self.upsample_mode = upsample_mode

        lateral_norm = None if no_norm_on_lateral else norm_cfg
        self.lateral_convs = nn.ModuleList(
            ConvModule(self.in_channels[i], out_channels, 1, norm_cfg=lateral_norm,
                       activation=None, inplace=False)
            for i in range(start_level, self.backbone_end_level)
        )
        conv_args = dict(norm_cfg=norm_cfg, activation=None, inplace=False)
        self.fpn_convs = nn.ModuleList(
            ConvModule(out_channels, out_channels, 3, padding=1, **conv_args)
            for _ in range(start_level, self.backbone_end_level)
        )
        num_extra = num_outs - (self.backbone_end_level - start_level)
        if self.add_extra_convs:
            for i in range(num_extra):
                on_input = i == 0 and self.add_extra_convs == "on_input"
                extra_in = self.in_channels[self.backbone_end_level - 1] if on_input else out_channels
                self.fpn_convs.append(
                    ConvModule(extra_in, out_channels, 3, stride=2, padding=1, **conv_args))
        self.init_weights()

    def init_weights(self) -> None:
        """MMDetection's FPN init: Xavier-uniform convs, zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                xavier_init(m, distribution="uniform")

    def _upsample(self, x: Tensor, like: Tensor) -> Tensor:
        align = False if self.upsample_mode == "bilinear" else None
        return F.interpolate(x, size=like.shape[-2:], mode=self.upsample_mode, align_corners=align)

    def forward(self, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        if len(inputs) != len(self.in_channels):
            raise ValueError(f"FPN expects {len(self.in_channels)} feature maps "
                             f"(in_channels {self.in_channels}), got {len(inputs)}")
        laterals = [conv(inputs[self.start_level + j]) for j, conv in enumerate(self.lateral_convs)]
        # each laterals[j]: (N, C, H_{start+j}, W_{start+j})
        for j in range(len(laterals) - 1, 0, -1):  # top-down
            laterals[j - 1] = laterals[j - 1] + self._upsample(laterals[j], laterals[j - 1])
        outs = [self.fpn_convs[j](lat) for j, lat in enumerate(laterals)]
        num_used = len(outs)
        if self.num_outs > num_used and not self.add_extra_convs:
            for _ in range(self.num_outs - num_used):
                outs.append(F.max_pool2d(outs[-1], 1, stride=2))  # (N, C, ceil(h/2), ceil(w/2))
        elif self.num_outs > num_used:
            source = {
                "on_input": inputs[self.backbone_end_level - 1],
                "on_lateral": laterals[-1],
                "on_output": outs[-1],
            }[self.add_extra_convs]
            outs.append(self.fpn_convs[num_used](source))
            for i in range(num_used + 1, self.num_outs):
                prev = F.relu(outs[-1]) if self.relu_before_extra_convs else outs[-1]
                outs.append(self.fpn_convs[i](prev))
        return tuple(outs)
