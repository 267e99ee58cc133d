"""ResNet backbone (He et al. 2016), with MMDetection 2.x's options and torchvision's names.

N images, H x W input size, C_i channels of stage i (``base_channels * 2**i * expansion``).

Parameter names equal torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer1.0.downsample.0``, ...), so torchvision's ImageNet state dicts load directly (their
``fc.*`` keys are reported as unused). ``style = "pytorch"`` puts a bottleneck's stride on its
3x3 conv (torchvision); ``"caffe"`` puts it on the first 1x1 conv (the original MSRA models).
The stem (7x7 conv, stride 2, then 3x3 max-pool, stride 2) divides the input by 4, and stage
``i`` by ``strides[i]`` more, so with the default strides stage i has stride ``4 * 2**i``.

MMDetection's options on the same class: ``deep_stem`` (three 3x3 convs, ``stem.0`` ... ``stem.7``,
instead of ``conv1``/``bn1``), ``avg_down`` (a stride-s average pool before the projection
shortcut's 1x1 conv, which then has stride 1: ``downsample.0`` is the pool, ``.1`` the conv,
``.2`` the norm), ``stem_channels``, ``dcn`` + ``stage_with_dcn`` (a deformable 3x3 conv in
every bottleneck of the chosen stages, :mod:`detcli.models.dcn`) and ``plugins`` (blocks after
a bottleneck's convs, :mod:`detcli.models.plugins`). :class:`ResNetV1d` is
``deep_stem`` and ``avg_down`` together (Bag of Tricks' ResNet-D); ResNeXt is in
:mod:`detcli.models.backbones.resnext`.
"""

from __future__ import annotations

import logging
import math
from fractions import Fraction
from typing import Literal, Sequence

from pydantic import Field, model_validator
from torch import Tensor, nn

from detcli.config.schema import Maybe, Schema
from detcli.errors import ConfigError
from detcli.models.backbones.freezing import FrozenStagesBackbone, freeze
from detcli.models.channels import BackboneSchema
from detcli.models.dcn import DCNConfig, DeformConv2dPack, build_dcn
from detcli.models.layers import NormConfig, build_norm, constant_init, is_norm, kaiming_init
from detcli.models.plugins import PluginConfig, build_plugin
from detcli.models.pretrained import PretrainedInit, load_pretrained
from detcli.registry import BACKBONES

log = logging.getLogger(__name__)


class BasicBlock(nn.Module):
    """Two 3x3 convs and a shortcut (ResNet-18/34). ``style`` has no effect here."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, *, stride: int = 1, dilation: int = 1,
                 style: str = "pytorch", norm_cfg: NormConfig,
                 downsample: nn.Module | None = None, groups: int = 1, base_width: int = 4,
                 base_channels: int = 64, dcn: DCNConfig | None = None,
                 plugins: Sequence[PluginConfig] = ()) -> None:
        super().__init__()
        if dcn is not None or groups != 1 or plugins:
            raise ConfigError("ResNet BasicBlock (depth 18/34) takes no dcn, groups or plugins "
                              "(MMDetection's neither); use depth 50, 101 or 152")
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=dilation,
                               dilation=dilation, bias=False)
        self.bn1 = build_norm(norm_cfg, planes)[1]
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = build_norm(norm_cfg, planes)[1]
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    @property
    def last_norm(self) -> nn.Module:
        return self.bn2

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4), and a shortcut (ResNet-50/101/152, ResNeXt).

    The 3x3 conv has ``width`` channels: ``planes``, or for ResNeXt (``groups`` > 1)
    ``floor(planes * base_width / base_channels) * groups`` in ``groups`` groups (MMDetection's
    rule; 64x4d at stage 1: 64 * 4 / 64 * 64 = 256). With ``dcn`` it is a deformable conv
    (``conv2.weight`` as before, plus ``conv2.conv_offset.*``) unless ``fallback_on_stride``.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, *, stride: int = 1, dilation: int = 1,
                 style: str = "pytorch", norm_cfg: NormConfig,
                 downsample: nn.Module | None = None, groups: int = 1, base_width: int = 4,
                 base_channels: int = 64, dcn: DCNConfig | None = None,
                 plugins: Sequence[PluginConfig] = ()) -> None:
        super().__init__()
        width = planes if groups == 1 else math.floor(planes * base_width / base_channels) * groups
        stride_1x1, stride_3x3 = (stride, 1) if style == "caffe" else (1, stride)
        self.conv1 = nn.Conv2d(inplanes, width, 1, stride=stride_1x1, bias=False)
        self.bn1 = build_norm(norm_cfg, width)[1]
        if dcn is None or dcn.fallback_on_stride:
            self.conv2: nn.Module = nn.Conv2d(width, width, 3, stride=stride_3x3,
                                              padding=dilation, dilation=dilation, groups=groups,
                                              bias=False)
        else:
            self.conv2 = build_dcn(dcn, width, width, 3, stride=stride_3x3, padding=dilation,
                                   dilation=dilation, groups=groups)
        self.bn2 = build_norm(norm_cfg, width)[1]
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = build_norm(norm_cfg, planes * self.expansion)[1]
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        after = {"after_conv1": width, "after_conv2": width,
                 "after_conv3": planes * self.expansion}
        self.plugin_names: dict[str, list[str]] = {position: [] for position in after}
        for plugin in plugins:
            name, block = build_plugin(plugin.cfg, after[plugin.position])
            if hasattr(self, name):
                raise ConfigError(f"plugins: two {name!r} blocks in one bottleneck; give them "
                                  "cfg.postfix values (1, 2, ...)")
            self.add_module(name, block)
            self.plugin_names[plugin.position].append(name)

    def run_plugins(self, x: Tensor, position: str) -> Tensor:
        for name in self.plugin_names[position]:
            x = getattr(self, name)(x)
        return x

    @property
    def last_norm(self) -> nn.Module:
        return self.bn3

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.run_plugins(self.relu(self.bn1(self.conv1(x))), "after_conv1")
        out = self.run_plugins(self.relu(self.bn2(self.conv2(out))), "after_conv2")
        out = self.run_plugins(self.bn3(self.conv3(out)), "after_conv3")
        return self.relu(out + identity)


ARCH: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, ...]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


def make_res_layer(block: type[BasicBlock] | type[Bottleneck], inplanes: int, planes: int,
                   num_blocks: int, *, stride: int, dilation: int, style: str,
                   norm_cfg: NormConfig, avg_down: bool = False, groups: int = 1,
                   base_width: int = 4, base_channels: int = 64,
                   dcn: DCNConfig | None = None,
                   plugins: Sequence[PluginConfig] = ()) -> nn.Sequential:
    """One stage: the first block changes stride/width (with a 1x1 projection shortcut, after a
    stride-s average pool with ``avg_down``); ``dcn`` goes into every block."""
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        pool: list[nn.Module] = []
        conv_stride = stride
        if avg_down:
            pool = [nn.AvgPool2d(kernel_size=stride, stride=stride, ceil_mode=True,
                                 count_include_pad=False)]
            conv_stride = 1
        downsample = nn.Sequential(
            *pool,
            nn.Conv2d(inplanes, planes * block.expansion, 1, stride=conv_stride, bias=False),
            build_norm(norm_cfg, planes * block.expansion)[1],
        )
    options = dict(dilation=dilation, style=style, norm_cfg=norm_cfg, groups=groups,
                   base_width=base_width, base_channels=base_channels, dcn=dcn, plugins=plugins)
    blocks = [block(inplanes, planes, stride=stride, downsample=downsample, **options)]
    for _ in range(1, num_blocks):
        blocks.append(block(planes * block.expansion, planes, **options))
    return nn.Sequential(*blocks)


def stage_settings_problem(depth: int, num_stages: int, strides: Sequence[int],
                           dilations: Sequence[int], out_indices: Sequence[int],
                           frozen_stages: int) -> str | None:
    """What is inconsistent among these ResNet settings, or None."""
    if depth not in ARCH:
        return f"depth {depth} is not one of {sorted(ARCH)}"
    if not 1 <= num_stages <= 4:
        return f"num_stages {num_stages} must be between 1 and 4"
    if len(strides) != num_stages or len(dilations) != num_stages:
        return (f"strides {list(strides)} and dilations {list(dilations)} need one entry per "
                f"stage (num_stages = {num_stages})")
    if not out_indices or any(not 0 <= i < num_stages for i in out_indices):
        return f"out_indices {list(out_indices)} must be non-empty, each in [0, {num_stages})"
    if list(out_indices) != sorted(set(out_indices)):
        return f"out_indices {list(out_indices)} must be increasing without repeats"
    if not -1 <= frozen_stages <= num_stages:
        return f"frozen_stages {frozen_stages} must be in [-1, {num_stages}]"
    return None


def dcn_settings_problem(depth: int, num_stages: int, dcn: DCNConfig | None,
                         stage_with_dcn: Sequence[bool]) -> str | None:
    """What is inconsistent in ``dcn`` / ``stage_with_dcn`` (MMDetection's asserts), or None."""
    if dcn is None:
        return None
    if len(stage_with_dcn) != num_stages:
        return (f"stage_with_dcn {list(stage_with_dcn)} needs one entry per stage "
                f"(num_stages = {num_stages})")
    if any(stage_with_dcn) and ARCH[depth][0] is BasicBlock:
        return f"dcn needs bottleneck blocks (depth 50, 101 or 152), not depth {depth}"
    return None


def plugins_problem(depth: int, num_stages: int, plugins: Sequence[PluginConfig]) -> str | None:
    """What is inconsistent in ``plugins`` (MMDetection's asserts), or None."""
    if plugins and ARCH[depth][0] is BasicBlock:
        return f"plugins need bottleneck blocks (depth 50, 101 or 152), not depth {depth}"
    for i, plugin in enumerate(plugins):
        if plugin.stages is not None and len(plugin.stages) != num_stages:
            return (f"plugins[{i}].stages {plugin.stages} needs one entry per stage "
                    f"(num_stages = {num_stages})")
    return None


def stage_plugins(plugins: Sequence[PluginConfig], stage: int) -> list[PluginConfig]:
    """The plugins stage ``stage`` gets (those without ``stages`` go everywhere)."""
    return [p for p in plugins if p.stages is None or p.stages[stage]]


class ResNetFamilyConfig(BackboneSchema):
    """The settings every ResNet-family backbone shares (MMDetection 3.3 names and defaults)."""

    depth: Literal[18, 34, 50, 101, 152] = 50
    in_channels: int = Field(3, ge=1)
    stem_channels: Maybe[int] = Field(None, ge=2)  # None: base_channels
    base_channels: int = Field(64, ge=1)
    num_stages: int = Field(4, ge=1, le=4)
    strides: list[int] = Field(default_factory=lambda: [1, 2, 2, 2])
    dilations: list[int] = Field(default_factory=lambda: [1, 1, 1, 1])
    out_indices: list[int] = Field(default_factory=lambda: [0, 1, 2, 3])
    style: Literal["pytorch", "caffe"] = "pytorch"
    frozen_stages: int = Field(-1, ge=-1, le=4)
    norm_cfg: NormConfig = Field(default_factory=NormConfig)
    norm_eval: bool = True  # keep BN layers in eval mode (frozen statistics) while training
    dcn: Maybe[DCNConfig] = None
    stage_with_dcn: list[bool] = Field(default_factory=lambda: [False, False, False, False])
    plugins: Maybe[list[PluginConfig]] = None
    zero_init_residual: bool = True
    init_cfg: Maybe[PretrainedInit] = None

    @model_validator(mode="after")
    def _consistent_stages(self) -> ResNetFamilyConfig:
        problem = (stage_settings_problem(self.depth, self.num_stages, self.strides,
                                          self.dilations, self.out_indices, self.frozen_stages)
                   or dcn_settings_problem(self.depth, self.num_stages, self.dcn,
                                           self.stage_with_dcn)
                   or plugins_problem(self.depth, self.num_stages, self.plugins or []))
        if problem:
            raise ValueError(problem)
        if min(self.strides + self.dilations) < 1:
            raise ValueError(f"strides {self.strides} and dilations {self.dilations} must be >= 1")
        return self

    def out_channels(self) -> list[int]:
        """Channels of each output (one per out_index), known without building the network."""
        expansion = ARCH[self.depth][0].expansion
        return [self.base_channels * 2**i * expansion for i in self.out_indices]

    def describe(self, where: str) -> str:
        return f"{where} ({self.type} depth {self.depth})"

    def label(self) -> str:
        """``ResNet-50``, ``ResNet-50 caffe``, ``ResNet-18 (1/4 width)``, ``ResNet-50 DCNv2``,
        ``ResNet-50 + GeneralizedAttention`` (one ``+`` per plugin)."""
        text = f"{self.type}-{self.depth}" + (" caffe" if self.style == "caffe" else "")
        if self.dcn is not None and any(self.stage_with_dcn):
            text += f" {self.dcn.type}"
        text += "".join(f" + {plugin.cfg.type}" for plugin in self.plugins or [])
        if self.base_channels != 64:
            text += f" ({Fraction(self.base_channels, 64)} width)"
        return text


class ResNetConfig(ResNetFamilyConfig):
    """ResNet backbone settings (MMDetection's ``ResNet``)."""

    type: Literal["ResNet"] = "ResNet"
    deep_stem: bool = False
    avg_down: bool = False

    def weights(self) -> list[str]:
        """torchvision's ``resnet{depth}`` (pytorch style), MSRA's caffe ResNet-50/101; none
        for a deep stem, average-pool shortcuts or other widths."""
        if self.deep_stem or self.avg_down or self.base_channels != 64 or self.in_channels != 3:
            return []
        if self.stem_channels not in (None, 64):
            return []
        if self.style == "caffe":
            return [f"open-mmlab://{source}/resnet{self.depth}_caffe"
                    for source in ("detectron", "detectron2")] if self.depth in (50, 101) else []
        return [f"torchvision://resnet{self.depth}"]


class ResNetV1dConfig(ResNetFamilyConfig):
    """``ResNetV1d``: a ResNet with ``deep_stem`` and ``avg_down`` (neither may be set)."""

    type: Literal["ResNetV1d"] = "ResNetV1d"


@BACKBONES.register(ResNetConfig)
class ResNet(FrozenStagesBackbone):
    """ResNet returning the outputs of the stages in ``out_indices``.

    Weights start random (MMDetection's init); :meth:`init_weights` loads ``init_cfg``'s
    checkpoint, so a trainer calls it once after building and evaluation can skip it.
    ``groups`` and ``base_width`` are the bottleneck's (1 and 4: a plain ResNet); ResNeXt sets
    them before building, as MMDetection's does.
    """

    groups = 1
    base_width = 4

    def __init__(
        self,
        *,
        depth: int = 50,
        in_channels: int = 3,
        stem_channels: int | None = None,
        base_channels: int = 64,
        num_stages: int = 4,
        strides: Sequence[int] = (1, 2, 2, 2),
        dilations: Sequence[int] = (1, 1, 1, 1),
        out_indices: Sequence[int] = (0, 1, 2, 3),
        style: Literal["pytorch", "caffe"] = "pytorch",
        deep_stem: bool = False,
        avg_down: bool = False,
        frozen_stages: int = -1,
        norm_cfg: NormConfig | None = None,
        norm_eval: bool = True,
        dcn: DCNConfig | None = None,
        stage_with_dcn: Sequence[bool] = (False, False, False, False),
        plugins: Sequence[PluginConfig] | None = None,
        zero_init_residual: bool = True,
        init_cfg: PretrainedInit | None = None,
    ) -> None:
        super().__init__()  # the settings were checked once, by ResNetConfig
        norm_cfg = norm_cfg or NormConfig()
        self.depth = depth
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.zero_init_residual = zero_init_residual
        self.init_cfg = init_cfg
        self.deep_stem = deep_stem
        block, stage_blocks = ARCH[depth]
        stem_channels = base_channels if stem_channels is None else stem_channels
        self.make_stem(in_channels, stem_channels, norm_cfg)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        inplanes = stem_channels
        self.stage_channels: list[int] = []
        for i in range(num_stages):
            planes = base_channels * 2**i
            layer = self.make_stage(block, inplanes, planes, stage_blocks[i], stride=strides[i],
                                    dilation=dilations[i], style=style, norm_cfg=norm_cfg,
                                    avg_down=avg_down, groups=self.groups,
                                    base_width=self.base_width, base_channels=base_channels,
                                    dcn=dcn if dcn is not None and stage_with_dcn[i] else None,
                                    plugins=stage_plugins(plugins or (), i))
            self.add_module(f"layer{i + 1}", layer)
            inplanes = planes * block.expansion
            self.stage_channels.append(inplanes)
        self.out_channels = [self.stage_channels[i] for i in self.out_indices]
        self.reset_parameters()
        self._freeze_stages()

    def make_stage(self, block: type[BasicBlock] | type[Bottleneck], inplanes: int, planes: int,
                   num_blocks: int, **options: object) -> nn.Sequential:
        """One stage (:func:`make_res_layer`); Res2Net builds its own."""
        return make_res_layer(block, inplanes, planes, num_blocks, **options)  # type: ignore[arg-type]

    def make_stem(self, in_channels: int, stem_channels: int, norm_cfg: NormConfig) -> None:
        """``conv1`` (7x7, stride 2), ``bn1``, ``relu``; with ``deep_stem`` the ``stem``
        Sequential: 3x3 convs in -> s/2 (stride 2) -> s/2 -> s, each with a norm and a ReLU."""
        if not self.deep_stem:
            self.conv1 = nn.Conv2d(in_channels, stem_channels, 7, stride=2, padding=3, bias=False)
            self.bn1 = build_norm(norm_cfg, stem_channels)[1]
            self.relu = nn.ReLU(inplace=True)
            return
        half = stem_channels // 2
        layers: list[nn.Module] = []
        for c_in, c_out, stride in ((in_channels, half, 2), (half, half, 1),
                                    (half, stem_channels, 1)):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                       build_norm(norm_cfg, c_out)[1], nn.ReLU(inplace=True)]
        self.stem = nn.Sequential(*layers)

    @property
    def stem_modules(self) -> list[nn.Module]:
        """What ``frozen_stages >= 0`` freezes before the stages."""
        return [self.stem] if self.deep_stem else [self.conv1, self.bn1]

    @property
    def res_layers(self) -> list[nn.Sequential]:
        return [getattr(self, f"layer{i + 1}") for i in range(len(self.stage_channels))]

    def reset_parameters(self) -> None:
        """MMDetection's random init: Kaiming (fan_out) convs, unit norms, zeroed last norms;
        a deformable conv keeps MMCV's own init (zero offsets)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                kaiming_init(m)
            elif is_norm(m):
                constant_init(m, 1.0)
        for m in self.modules():
            if isinstance(m, DeformConv2dPack):
                m.reset_parameters()
        if self.zero_init_residual:  # each residual branch starts as the identity
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    constant_init(m.last_norm, 0.0)

    def init_weights(self) -> None:
        """Load the pretrained checkpoint named by ``init_cfg`` (a no-op without one)."""
        if self.init_cfg is not None:
            load_pretrained(self, self.init_cfg)

    def _freeze_stages(self) -> None:
        frozen: list[nn.Module] = []
        if self.frozen_stages >= 0:
            frozen += self.stem_modules
        frozen += self.res_layers[: max(self.frozen_stages, 0)]
        for module in frozen:
            freeze(module)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        x = self.stem(x) if self.deep_stem else self.relu(self.bn1(self.conv1(x)))
        x = self.maxpool(x)  # (N, stem_channels, H/4, W/4)
        outs = []
        for i, layer in enumerate(self.res_layers):
            x = layer(x)  # (N, C_i, H/s_i, W/s_i)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)


@BACKBONES.register(ResNetV1dConfig)
class ResNetV1d(ResNet):
    """ResNet-D (He et al. 2019, "Bag of Tricks"): the deep stem and average-pool shortcuts.

    Takes every :class:`ResNet` keyword but ``deep_stem`` and ``avg_down``, which it sets."""

    def __init__(self, **resnet_options: object) -> None:
        super().__init__(deep_stem=True, avg_down=True, **resnet_options)  # type: ignore[arg-type]
