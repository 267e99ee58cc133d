"""CSPNeXt (RTMDet's backbone, Lyu et al. 2022), as MMDetection 3.3's ``CSPNeXt``.

N images, H x W the input; stage i (1-based) has stride 2**(i + 1): the stem (stride 2) is
output index 0, ``stage1`` ... ``stage4`` (P5; ``stage5`` with P6) are indices 1 ... 4 (5).

Layout (MMDetection's names, so its checkpoints load strictly):

- ``stem``: three 3 x 3 ConvModules 3 -> w/2 (stride 2) -> w/2 -> w, w = ``int(64 * widen_factor)``;
- ``stage{i}``: a stride-2 3 x 3 conv (``stage{i}.0``; depthwise-separable with
  ``use_depthwise``), for the last stage an :class:`~detcli.models.csp.SPPBottleneck`
  (``stage{i}.1``), then a :class:`~detcli.models.csp.CSPLayer` of
  ``max(round(blocks * deepen_factor), 1)`` CSPNeXt blocks with channel attention.

``arch`` P5 widths (in, out) per stage 64-128, 128-256, 256-512, 512-1024 with 3, 6, 6, 3 blocks,
identity shortcuts in all but the last; P6 adds a 768 stage. Every width is times
``widen_factor``. The outputs are the maps of ``out_indices`` (default the strides 8, 16, 32).
"""

from __future__ import annotations

import logging
import math
from typing import Literal, Sequence

from pydantic import Field, model_validator
from torch import Tensor, nn

from detcli.config.schema import Maybe
from detcli.errors import ConfigError
from detcli.models.backbones.freezing import FrozenStagesBackbone, freeze
from detcli.models.channels import BackboneSchema
from detcli.models.csp import CSPLayer, SPPBottleneck
from detcli.models.layers import (
    ActConfig,
    ConvModule,
    NormConfig,
    bn_momentum_003,
    conv_module,
    constant_init,
    is_norm,
    kaiming_init,
    silu_act,
)
from detcli.models.pretrained import PretrainedInit, load_state, read_checkpoint
from detcli.registry import BACKBONES

log = logging.getLogger(__name__)

# per stage: in channels, out channels, blocks, identity shortcut, SPP (before widen/deepen)
ARCH_SETTINGS: dict[str, list[tuple[int, int, int, bool, bool]]] = {
    "P5": [(64, 128, 3, True, False), (128, 256, 6, True, False),
           (256, 512, 6, True, False), (512, 1024, 3, False, True)],
    "P6": [(64, 128, 3, True, False), (128, 256, 6, True, False),
           (256, 512, 6, True, False), (512, 768, 3, True, False),
           (768, 1024, 3, False, True)],
}


def stage_channels(arch: str, widen_factor: float) -> list[int]:
    """Channels of output index 0 (the stem) ... len(stages) (the last stage)."""
    stages = ARCH_SETTINGS[arch]
    return [int(stages[0][0] * widen_factor)] + [int(out * widen_factor)
                                                 for _, out, _, _, _ in stages]


CSPNEXT_RSB = "https://download.openmmlab.com/mmdetection/v3.0/rtmdet/cspnext_rsb_pretrain/"
CSPNEXT_WEIGHTS = {  # (deepen_factor, widen_factor) -> MMDetection's ImageNet file (P5)
    (0.167, 0.375): [CSPNEXT_RSB + "cspnext-tiny_imagenet_600e.pth"],
    (0.33, 0.5): [CSPNEXT_RSB + "cspnext-s_imagenet_600e.pth"],
}


class CSPNeXtConfig(BackboneSchema):
    """CSPNeXt settings: MMDetection 3.3's names and class defaults."""

    type: Literal["CSPNeXt"] = "CSPNeXt"
    arch: Literal["P5", "P6"] = "P5"
    deepen_factor: float = Field(1.0, gt=0)
    widen_factor: float = Field(1.0, gt=0)
    out_indices: list[int] = Field(default_factory=lambda: [2, 3, 4])
    frozen_stages: int = Field(-1, ge=-1)
    use_depthwise: bool = False
    expand_ratio: float = Field(0.5, gt=0)
    spp_kernel_sizes: list[int] = Field(default_factory=lambda: [5, 9, 13])
    channel_attention: bool = True
    norm_cfg: NormConfig = Field(default_factory=bn_momentum_003)
    act_cfg: ActConfig = Field(default_factory=silu_act)
    norm_eval: bool = False
    # MMDetection's cspnext-*_imagenet checkpoints; keys under "backbone." are read without it
    init_cfg: Maybe[PretrainedInit] = None

    @model_validator(mode="after")
    def _consistent(self) -> CSPNeXtConfig:
        num_stages = len(ARCH_SETTINGS[self.arch])
        problem = indices_problem(self.out_indices, self.frozen_stages, num_stages)
        if problem:
            raise ValueError(problem)
        return self

    def out_channels(self) -> list[int]:
        """Channels of each output (one per out_index), known without building the network."""
        channels = stage_channels(self.arch, self.widen_factor)
        return [channels[i] for i in self.out_indices]

    def weights(self) -> list[str]:
        """MMDetection's CSPNeXt ImageNet files (the RTMDet tiny and s presets' backbones)."""
        if (self.arch, self.use_depthwise, self.expand_ratio, self.channel_attention) != (
                "P5", False, 0.5, True):
            return []
        return CSPNEXT_WEIGHTS.get((self.deepen_factor, self.widen_factor), [])


def indices_problem(out_indices: Sequence[int], frozen_stages: int, num_stages: int) -> str | None:
    """What is wrong with these indices for ``num_stages`` stages (plus the stem), or None."""
    if not out_indices or any(not 0 <= i <= num_stages for i in out_indices):
        return (f"out_indices {list(out_indices)} must be non-empty, each in [0, {num_stages}] "
                f"(0: the stem, {num_stages}: the last stage)")
    if list(out_indices) != sorted(set(out_indices)):
        return f"out_indices {list(out_indices)} must be increasing without repeats"
    if not -1 <= frozen_stages <= num_stages:
        return f"frozen_stages {frozen_stages} must be in [-1, {num_stages}]"
    return None


@BACKBONES.register(CSPNeXtConfig)
class CSPNeXt(FrozenStagesBackbone):
    """(N, 3, H, W) -> the maps of ``out_indices``; see the module docstring."""

    def __init__(
        self,
        *,
        arch: str = "P5",
        deepen_factor: float = 1.0,
        widen_factor: float = 1.0,
        out_indices: Sequence[int] = (2, 3, 4),
        frozen_stages: int = -1,
        use_depthwise: bool = False,
        expand_ratio: float = 0.5,
        spp_kernel_sizes: Sequence[int] = (5, 9, 13),
        channel_attention: bool = True,
        norm_cfg: NormConfig | None = None,
        act_cfg: ActConfig | None = None,
        norm_eval: bool = False,
        init_cfg: PretrainedInit | None = None,
    ) -> None:
        super().__init__()
        if arch not in ARCH_SETTINGS:
            raise ConfigError(f"CSPNeXt arch {arch!r} is not one of {', '.join(ARCH_SETTINGS)}")
        stages = ARCH_SETTINGS[arch]
        problem = indices_problem(out_indices, frozen_stages, len(stages))
        if problem:
            raise ConfigError(f"CSPNeXt: {problem}")
        norm_cfg = norm_cfg or bn_momentum_003()
        act = (act_cfg or silu_act()).type
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.init_cfg = init_cfg
        stem = int(stages[0][0] * widen_factor)
        self.stem = nn.Sequential(
            ConvModule(3, stem // 2, 3, stride=2, padding=1, norm_cfg=norm_cfg, activation=act),
            ConvModule(stem // 2, stem // 2, 3, padding=1, norm_cfg=norm_cfg, activation=act),
            ConvModule(stem // 2, stem, 3, padding=1, norm_cfg=norm_cfg, activation=act))
        self.layers = ["stem"]
        for i, (c_in, c_out, blocks, add_identity, use_spp) in enumerate(stages):
            c_in, c_out = int(c_in * widen_factor), int(c_out * widen_factor)
            stage: list[nn.Module] = [conv_module(use_depthwise, c_in, c_out, 3, stride=2,
                                                  padding=1, norm_cfg=norm_cfg, activation=act)]
            if use_spp:
                stage.append(SPPBottleneck(c_out, c_out, kernel_sizes=spp_kernel_sizes,
                                           norm_cfg=norm_cfg, activation=act))
            stage.append(CSPLayer(c_out, c_out, num_blocks=max(round(blocks * deepen_factor), 1),
                                  add_identity=add_identity, use_depthwise=use_depthwise,
                                  expand_ratio=expand_ratio, channel_attention=channel_attention,
                                  norm_cfg=norm_cfg, activation=act))
            self.add_module(f"stage{i + 1}", nn.Sequential(*stage))
            self.layers.append(f"stage{i + 1}")
        channels = stage_channels(arch, widen_factor)
        self.out_channels = [channels[i] for i in self.out_indices]
        self.reset_parameters()
        self._freeze_stages()

    def reset_parameters(self) -> None:
        """MMDetection's init_cfg for CSPNeXt: Kaiming uniform (a = sqrt(5), fan_in, leaky
        ReLU) for every conv -- torch's own default -- and unit norms."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                kaiming_init(m, a=math.sqrt(5), mode="fan_in", nonlinearity="leaky_relu",
                             distribution="uniform")
            elif is_norm(m):
                constant_init(m, 1.0)

    def init_weights(self) -> None:
        """Load ``init_cfg``'s checkpoint (a no-op without one); MMDetection's CSPNeXt
        ImageNet checkpoints keep the backbone under ``backbone.``, which is stripped."""
        if self.init_cfg is None:
            return
        state = read_checkpoint(self.init_cfg.checkpoint)
        if any(k.startswith("backbone.") for k in state):
            state = {k.removeprefix("backbone."): v for k, v in state.items()
                     if k.startswith("backbone.")}
        load_state(self, state, self.init_cfg.checkpoint)
        log.info("loaded %s into CSPNeXt", self.init_cfg.checkpoint)

    def _freeze_stages(self) -> None:
        for name in self.layers[: self.frozen_stages + 1]:
            freeze(getattr(self, name))

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        outs = []
        for i, name in enumerate(self.layers):
            x = getattr(self, name)(x)  # (N, C_i, H / 2**(i+1), W / 2**(i+1))
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
