"""MobileNetV3 (Howard et al. 2019), torchvision's ``mobilenet_v3_large`` / ``_small`` trunk.

N images, H x W input. MMDetection 3.3's core has no MobileNetV3 (its MobileNetV3 detectors come
from mmpretrain or other repositories), so the architecture and the names are torchvision's,
and torchvision's ImageNet weights load as they are (``init_cfg.checkpoint =
"torchvision://mobilenet_v3_large"``; the file's ``classifier.*`` is unused):

- ``features.0``: 3x3 stride-2 conv, BN, Hardswish (``features.0.0``, ``.1``);
- ``features.k`` (k = 1 ... B): torchvision's inverted residual blocks, ``block.j`` an
  optional 1x1 expansion, a depthwise k x k conv, an optional squeeze-and-excitation
  (``fc1``, ``fc2``, hard sigmoid) and a 1x1 projection; ReLU or Hardswish per block
  (torchvision's ``_mobilenet_v3_conf``: 15 blocks for large, 11 for small);
- ``features.{B+1}``: 1x1 conv to 6x the last block's channels, BN, Hardswish.

Output index i (0 ... 4) is the last feature at stride ``2**(i + 1)``: large: features 1, 3, 6,
12, 16 (16, 24, 40, 112, 960 channels); small: features 0, 1, 3, 8, 12 (16, 16, 24, 48, 576).
The default (2, 3, 4) gives the stride-8/16/32 maps a neck reads. ``widen_factor`` scales every
width as torchvision's ``width_mult`` (multiples of 8). BatchNorm as torchvision's (eps 1e-3,
momentum 0.01) by default.

``frozen_stages = k``: -1 none; k >= 0 stops the gradient of (and puts in eval mode) the stem
``features.0`` and the features up to output index k - 1; ``norm_eval`` keeps every BN's
statistics frozen while training, as ResNet's keys do.
"""

from __future__ import annotations

from functools import partial
from typing import Literal, Sequence

from pydantic import Field, model_validator
from torch import Tensor, nn
from torchvision.models.mobilenetv3 import InvertedResidual, InvertedResidualConfig
from torchvision.models.mobilenetv3 import _mobilenet_v3_conf as torchvision_settings
from torchvision.ops.misc import Conv2dNormActivation

from detcli.config.schema import Maybe
from detcli.errors import ConfigError
from detcli.models.backbones.freezing import FrozenStagesBackbone, freeze
from detcli.models.channels import BackboneSchema
from detcli.models.layers import NormConfig
from detcli.models.pretrained import PretrainedInit, load_state, read_checkpoint
from detcli.registry import BACKBONES

NUM_OUTPUTS = 5  # strides 2, 4, 8, 16, 32


def torchvision_bn() -> NormConfig:
    """torchvision's MobileNetV3 BatchNorm: eps 1e-3, momentum 0.01."""
    return NormConfig(eps=0.001, momentum=0.01)


def block_settings(arch: str, widen_factor: float) -> list[InvertedResidualConfig]:
    """torchvision's inverted residual settings of ``mobilenet_v3_{arch}``."""
    return torchvision_settings(f"mobilenet_v3_{arch}", width_mult=widen_factor)[0]


def output_features(settings: list[InvertedResidualConfig]) -> tuple[list[int], list[int]]:
    """(the ``features`` index of output 0 ... 4, its channels): the last feature at each
    stride 2, 4, 8, 16, 32 (the stem is feature 0, the last 1x1 conv feature B + 1)."""
    strides = [2]
    channels = [settings[0].input_channels]
    for cfg in settings:
        strides.append(strides[-1] * cfg.stride)
        channels.append(cfg.out_channels)
    strides.append(strides[-1])
    channels.append(6 * settings[-1].out_channels)
    last = [max(k for k, s in enumerate(strides) if s == 2 ** (i + 1)) for i in range(NUM_OUTPUTS)]
    return last, [channels[k] for k in last]


class MobileNetV3Config(BackboneSchema):
    """MobileNetV3 settings (torchvision's design; det's keys as MobileNetV2's)."""

    type: Literal["MobileNetV3"] = "MobileNetV3"
    arch: Literal["large", "small"] = "large"
    widen_factor: float = Field(1.0, gt=0)
    out_indices: list[int] = Field(default_factory=lambda: [2, 3, 4])
    frozen_stages: int = Field(-1, ge=-1, le=NUM_OUTPUTS)
    norm_cfg: NormConfig = Field(default_factory=torchvision_bn)
    norm_eval: bool = False
    init_cfg: Maybe[PretrainedInit] = None

    @model_validator(mode="after")
    def _valid(self) -> MobileNetV3Config:
        if not self.out_indices or any(not 0 <= i < NUM_OUTPUTS for i in self.out_indices):
            raise ValueError(f"out_indices {self.out_indices} must be non-empty, each in "
                             f"[0, {NUM_OUTPUTS}) (strides 2, 4, 8, 16, 32)")
        if self.norm_cfg.type == "GN":
            raise ValueError("MobileNetV3 takes norm_cfg type 'BN' or 'SyncBN' (torchvision's "
                             "blocks take a BatchNorm), not 'GN'")
        return self

    def out_channels(self) -> list[int]:
        channels = output_features(block_settings(self.arch, self.widen_factor))[1]
        return [channels[i] for i in self.out_indices]

    def label(self) -> str:
        """``MobileNetV3-Large``, ``MobileNetV3-Small (x0.75)``."""
        width = "" if self.widen_factor == 1.0 else f" (x{self.widen_factor:g})"
        return f"MobileNetV3-{self.arch.capitalize()}{width}"

    def weights(self) -> list[str]:
        """torchvision's ``mobilenet_v3_{arch}`` at width 1 (its names: no conversion)."""
        return [f"torchvision://mobilenet_v3_{self.arch}"] if self.widen_factor == 1.0 else []


def norm_layer(cfg: NormConfig) -> partial[nn.Module]:
    kind = nn.SyncBatchNorm if cfg.type == "SyncBN" else nn.BatchNorm2d
    return partial(kind, eps=cfg.eps, momentum=cfg.momentum)


@BACKBONES.register(MobileNetV3Config)
class MobileNetV3(FrozenStagesBackbone):
    """MobileNetV3 trunk returning the maps of ``out_indices`` (module docstring)."""

    def __init__(self, *, arch: str = "large", widen_factor: float = 1.0,
                 out_indices: Sequence[int] = (2, 3, 4), frozen_stages: int = -1,
                 norm_cfg: NormConfig | None = None, norm_eval: bool = False,
                 init_cfg: PretrainedInit | None = None) -> None:
        super().__init__()
        if not out_indices or any(not 0 <= i < NUM_OUTPUTS for i in out_indices):
            raise ConfigError(f"MobileNetV3: out_indices {list(out_indices)} must be in "
                              f"[0, {NUM_OUTPUTS})")
        norm_cfg = norm_cfg or torchvision_bn()
        norm = norm_layer(norm_cfg)
        settings = block_settings(arch, widen_factor)
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.init_cfg = init_cfg
        last = settings[-1].out_channels
        self.features = nn.Sequential(
            Conv2dNormActivation(3, settings[0].input_channels, kernel_size=3, stride=2,
                                 norm_layer=norm, activation_layer=nn.Hardswish),
            *[InvertedResidual(cfg, norm) for cfg in settings],
            Conv2dNormActivation(last, 6 * last, kernel_size=1, norm_layer=norm,
                                 activation_layer=nn.Hardswish))
        self.output_features, channels = output_features(settings)
        self.out_channels = [channels[i] for i in self.out_indices]
        if not norm_cfg.requires_grad:
            for m in self.features.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.requires_grad_(False)
        self.reset_parameters()
        self._freeze_stages()

    def reset_parameters(self) -> None:
        """torchvision's init: Kaiming (fan_out) convs with zero biases, unit BNs."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def init_weights(self) -> None:
        """Load ``init_cfg``'s checkpoint (torchvision's names: no conversion)."""
        if self.init_cfg is not None:
            load_state(self, read_checkpoint(self.init_cfg.checkpoint), self.init_cfg.checkpoint)

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        end = self.output_features[self.frozen_stages - 1] if self.frozen_stages > 0 else 0
        for k in range(end + 1):
            freeze(self.features[k])

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        wanted = {self.output_features[i]: i for i in self.out_indices}
        outs: dict[int, Tensor] = {}
        for k, layer in enumerate(self.features[: max(wanted) + 1]):
            x = layer(x)
            if k in wanted:
                outs[wanted[k]] = x
        return tuple(outs[i] for i in self.out_indices)
