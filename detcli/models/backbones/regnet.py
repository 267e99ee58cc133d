"""RegNet (Radosavovic et al. 2020), the RegNetX designs as MMDetection 3.3's ``RegNet``.

N images, H x W input. A design (``arch``: w0, wa, wm, depth, group_w, bot_mul) gives block j
(of ``depth``) the width ``w0 * wm**round(log((w0 + j wa) / w0) / log(wm))`` rounded to a
multiple of 8; runs of equal widths are the stages (four for every named design), each width
then adjusted so the groups of ``group_w`` channels divide it (:func:`regnet_stages`).

Layout (MMDetection's names): ``conv1`` (3x3, stride 2) and ``bn1`` (no max-pool), then
``layer1`` ... ``layer4`` of ResNeXt bottlenecks without expansion (the 1x1 convs keep the
stage width w; the 3x3 conv has w / group_w groups; stride 2 on the 3x3 conv of each stage's
first block, which also has the 1x1 projection shortcut ``downsample``). Output i has stride
``2 * 2**(i + 1)`` (4, 8, 16, 32 ... with the default strides: 2 for the stem times 2 per
stage) and the stage's width as channels: regnetx_3.2gf gives 96, 192, 432, 1008.

``init_cfg.checkpoint = "torchvision://regnet_x_3_2gf"`` (and the other ``regnet_x_*``) loads
torchvision's ImageNet weights, converted from its layout (``stem.0``,
``trunk_output.block1.block1-0.f.a.0``, ...: :func:`regnet_from_torchvision`); MMDetection's
``open-mmlab://regnet/regnetx_3.2gf`` files are already in det's layout (a local path loads).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

from pydantic import Field, model_validator
from torch import Tensor, nn

from detcli.config.schema import Maybe, Schema
from detcli.errors import ConfigError
from detcli.models.backbones.resnet import Bottleneck, ResNet, make_res_layer
from detcli.models.channels import BackboneSchema
from detcli.models.layers import NormConfig, build_norm
from detcli.models.pretrained import PretrainedInit, load_state, read_checkpoint
from detcli.registry import BACKBONES

log = logging.getLogger(__name__)


class RegNetArch(Schema):
    """A RegNet design: initial width, slope, width multiplier, blocks, group width, ratio."""

    w0: int = Field(ge=8, multiple_of=8)
    wa: float = Field(ge=0)
    wm: float = Field(gt=1)
    group_w: int = Field(ge=1)
    depth: int = Field(ge=1)
    bot_mul: float = Field(1.0, gt=0)


ARCHS: dict[str, RegNetArch] = {  # MMDetection's arch_settings
    "regnetx_400mf": RegNetArch(w0=24, wa=24.48, wm=2.54, group_w=16, depth=22),
    "regnetx_800mf": RegNetArch(w0=56, wa=35.73, wm=2.28, group_w=16, depth=16),
    "regnetx_1.6gf": RegNetArch(w0=80, wa=34.01, wm=2.25, group_w=24, depth=18),
    "regnetx_3.2gf": RegNetArch(w0=88, wa=26.31, wm=2.25, group_w=48, depth=25),
    "regnetx_4.0gf": RegNetArch(w0=96, wa=38.65, wm=2.43, group_w=40, depth=23),
    "regnetx_6.4gf": RegNetArch(w0=184, wa=60.83, wm=2.07, group_w=56, depth=17),
    "regnetx_8.0gf": RegNetArch(w0=80, wa=49.56, wm=2.88, group_w=120, depth=23),
    "regnetx_12gf": RegNetArch(w0=168, wa=73.36, wm=2.37, group_w=112, depth=19),
}


# MMDetection's design name -> the ImageNet files of that design (torchvision's regnet_x_400mf
# rounds its last stage to 400 channels, not 384: it does not fit)
REGNET_WEIGHTS = {
    "regnetx_800mf": ["torchvision://regnet_x_800mf"],
    "regnetx_1.6gf": ["torchvision://regnet_x_1_6gf"],
    "regnetx_3.2gf": ["torchvision://regnet_x_3_2gf", "open-mmlab://regnetx_3.2gf"],
    "regnetx_8.0gf": ["torchvision://regnet_x_8gf"],
}


@dataclass(frozen=True)
class RegNetStages:
    """Per stage: its width (channels in and out of each block), blocks and 3x3 groups."""

    widths: list[int]
    blocks: list[int]
    groups: list[int]
    group_widths: list[int]


def regnet_stages(arch: RegNetArch) -> RegNetStages:
    """MMDetection's ``generate_regnet``, ``get_stages_from_blocks``, ``adjust_width_group``."""
    per_block = []
    for j in range(arch.depth):
        exponent = round(math.log((j * arch.wa + arch.w0) / arch.w0) / math.log(arch.wm))
        per_block.append(int(round(arch.w0 * arch.wm**exponent / 8) * 8))
    widths: list[int] = []
    blocks: list[int] = []
    for width in per_block:  # runs of equal widths are the stages
        if widths and widths[-1] == width:
            blocks[-1] += 1
        else:
            widths.append(width)
            blocks.append(1)
    bottleneck = [int(w * arch.bot_mul) for w in widths]
    group_widths = [min(arch.group_w, b) for b in bottleneck]
    bottleneck = [int(round(b / g) * g) for b, g in zip(bottleneck, group_widths)]
    widths = [int(b / arch.bot_mul) for b in bottleneck]
    groups = [int(round(w * arch.bot_mul)) // g for w, g in zip(widths, group_widths)]
    return RegNetStages(widths, blocks, groups, group_widths)


class RegNetConfig(BackboneSchema):
    """RegNet settings (MMDetection 3.3's names and defaults)."""

    type: Literal["RegNet"] = "RegNet"
    arch: str | RegNetArch = "regnetx_3.2gf"
    in_channels: int = Field(3, ge=1)
    stem_channels: int = Field(32, ge=1)
    base_channels: int = Field(32, ge=1)  # MMDetection's field; the stage widths come from arch
    strides: list[int] = Field(default_factory=lambda: [2, 2, 2, 2])
    dilations: list[int] = Field(default_factory=lambda: [1, 1, 1, 1])
    out_indices: list[int] = Field(default_factory=lambda: [0, 1, 2, 3])
    style: Literal["pytorch", "caffe"] = "pytorch"
    frozen_stages: int = Field(-1, ge=-1, le=4)
    norm_cfg: NormConfig = Field(default_factory=NormConfig)
    norm_eval: bool = True
    zero_init_residual: bool = True
    init_cfg: Maybe[PretrainedInit] = None

    @model_validator(mode="after")
    def _consistent(self) -> RegNetConfig:
        problem = regnet_problem(self.arch, self.strides, self.dilations, self.out_indices)
        if problem:
            raise ValueError(problem)
        return self

    def stages(self) -> RegNetStages:
        return regnet_stages(resolve_arch(self.arch))

    def out_channels(self) -> list[int]:
        widths = self.stages().widths
        return [widths[i] for i in self.out_indices]

    def describe(self, where: str) -> str:
        return f"{where} ({self.label()})"

    def label(self) -> str:
        """``RegNet regnetx_3.2gf`` (``RegNet custom arch`` for a design given in full)."""
        return f"RegNet {self.arch if isinstance(self.arch, str) else 'custom arch'}"

    def weights(self) -> list[str]:
        """torchvision's ``regnet_x_*`` file of a named design (converted on load), and MMCV's
        RegNetX-3.2GF file."""
        if not isinstance(self.arch, str) or self.in_channels != 3:
            return []
        return REGNET_WEIGHTS.get(self.arch, [])


def resolve_arch(arch: str | RegNetArch) -> RegNetArch:
    """A design by MMDetection's name (``regnetx_3.2gf``), or the design itself."""
    if isinstance(arch, RegNetArch):
        return arch
    if arch not in ARCHS:
        raise ConfigError(f"RegNet arch {arch!r} is not one of {', '.join(ARCHS)}",
                          hint="or give the design: arch = {w0, wa, wm, group_w, depth}")
    return ARCHS[arch]


def regnet_problem(arch: str | RegNetArch, strides: Sequence[int], dilations: Sequence[int],
                   out_indices: Sequence[int]) -> str | None:
    """What is inconsistent among these RegNet settings, or None."""
    if isinstance(arch, str) and arch not in ARCHS:
        return f"arch {arch!r} is not one of {', '.join(ARCHS)}"
    num_stages = len(regnet_stages(resolve_arch(arch)).widths)
    if not 1 <= num_stages <= 4:
        return f"the arch makes {num_stages} stages; RegNet takes 1 to 4"
    if len(strides) != num_stages or len(dilations) != num_stages:
        return (f"strides {list(strides)} and dilations {list(dilations)} need one entry per "
                f"stage ({num_stages} for this arch)")
    if not out_indices or any(not 0 <= i < num_stages for i in out_indices):
        return f"out_indices {list(out_indices)} must be non-empty, each in [0, {num_stages})"
    return None


class RegNetBottleneck(Bottleneck):
    """ResNeXt bottleneck with no expansion: 1x1 w -> w, grouped 3x3, 1x1 w -> w."""

    expansion = 1


@BACKBONES.register(RegNetConfig)
class RegNet(ResNet):
    """RegNetX returning the stages in ``out_indices`` (freezing, ``norm_eval``, init and
    ``train`` are ResNet's; the stem has no max-pool)."""

    def __init__(
        self,
        *,
        arch: str | RegNetArch = "regnetx_3.2gf",
        in_channels: int = 3,
        stem_channels: int = 32,
        base_channels: int = 32,
        strides: Sequence[int] = (2, 2, 2, 2),
        dilations: Sequence[int] = (1, 1, 1, 1),
        out_indices: Sequence[int] = (0, 1, 2, 3),
        style: Literal["pytorch", "caffe"] = "pytorch",
        frozen_stages: int = -1,
        norm_cfg: NormConfig | None = None,
        norm_eval: bool = True,
        zero_init_residual: bool = True,
        init_cfg: PretrainedInit | None = None,
    ) -> None:
        nn.Module.__init__(self)  # ResNet's layout differs; its behaviour is reused
        problem = regnet_problem(arch, strides, dilations, out_indices)
        if problem:
            raise ConfigError(f"RegNet: {problem}")
        norm_cfg = norm_cfg or NormConfig()
        stages = regnet_stages(resolve_arch(arch))
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.zero_init_residual = zero_init_residual
        self.init_cfg = init_cfg
        self.deep_stem = False
        self.conv1 = nn.Conv2d(in_channels, stem_channels, 3, stride=2, padding=1, bias=False)
        self.bn1 = build_norm(norm_cfg, stem_channels)[1]
        self.relu = nn.ReLU(inplace=True)
        inplanes = stem_channels
        self.stage_channels: list[int] = []
        for i, width in enumerate(stages.widths):
            layer = make_res_layer(
                RegNetBottleneck, inplanes, width, stages.blocks[i], stride=strides[i],
                dilation=dilations[i], style=style, norm_cfg=norm_cfg,
                groups=stages.groups[i], base_width=stages.group_widths[i], base_channels=width)
            self.add_module(f"layer{i + 1}", layer)
            inplanes = width
            self.stage_channels.append(width)
        self.out_channels = [self.stage_channels[i] for i in self.out_indices]
        self.reset_parameters()
        self._freeze_stages()

    def init_weights(self) -> None:
        """Load ``init_cfg``'s checkpoint, converting torchvision's layout when it has it."""
        if self.init_cfg is None:
            return
        state = read_checkpoint(self.init_cfg.checkpoint)
        if any(k.startswith("trunk_output.") for k in state):
            state = regnet_from_torchvision(state)
        load_state(self, state, self.init_cfg.checkpoint)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        x = self.relu(self.bn1(self.conv1(x)))  # (N, stem_channels, H/2, W/2)
        outs = []
        for i, layer in enumerate(self.res_layers):
            x = layer(x)  # (N, w_i, H/s_i, W/s_i)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)


TORCHVISION_PARTS = {"f.a.0": "conv1", "f.a.1": "bn1", "f.b.0": "conv2", "f.b.1": "bn2",
                     "f.c.0": "conv3", "f.c.1": "bn3", "proj.0": "downsample.0",
                     "proj.1": "downsample.1"}
_BLOCK_KEY = re.compile(r"^trunk_output\.block(\d+)\.block\d+-(\d+)\.(f\.[abc]\.[01]|proj\.[01])\.(.+)$")


def regnet_from_torchvision(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """torchvision's RegNet state dict -> det's (MMDetection's) names; ``fc.*`` dropped.

    ``stem.0`` / ``stem.1`` -> ``conv1`` / ``bn1``; ``trunk_output.block{s}.block{s}-{b}.f.a.0``
    -> ``layer{s}.{b}.conv1`` (``f.a.1`` bn1, ``f.b`` conv2/bn2, ``f.c`` conv3/bn3, ``proj``
    downsample). Every other key is kept as it is (and reported unused when loaded)."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith("fc."):
            continue
        match = _BLOCK_KEY.match(key)
        if match:
            stage, block, part, leaf = match.groups()
            key = f"layer{stage}.{block}.{TORCHVISION_PARTS[part]}.{leaf}"
        elif key.startswith("stem.0."):
            key = "conv1." + key.removeprefix("stem.0.")
        elif key.startswith("stem.1."):
            key = "bn1." + key.removeprefix("stem.1.")
        out[key] = value
    return out
