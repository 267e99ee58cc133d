"""CSPNeXtPAFPN (RTMDet's neck), as MMDetection 3.3's ``CSPNeXtPAFPN``.

N images, L input levels with channels C_0 < ... < C_{L-1} (strides s_0 < ... : the backbone's
``out_indices``), O ``out_channels``.

A path-aggregation FPN whose fusions are CSP layers (CSPNeXt blocks, no identity shortcut, no
channel attention). Top-down, from the deepest level: ``reduce_layers.j`` (1 x 1, C_l -> C_{l-1})
replaces the running top map, which is upsampled x2 (nearest), concatenated with input l - 1 and
fused by ``top_down_blocks.j`` (2 C_{l-1} -> C_{l-1}); j counts from the top. Bottom-up:
``downsamples.l`` (3 x 3, stride 2, C_l) of the running bottom map, concatenated with the
top-down map of level l + 1 (the deepest one: the reduced input), fused by
``bottom_up_blocks.l`` (2 C_l -> C_{l+1}). Each level's result goes through ``out_convs.l``
(3 x 3, C_l -> O). In and out: L maps at the input strides.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from detcli.config.schema import Maybe, derive_or_check
from detcli.errors import ConfigError, DetError
from detcli.models.channels import NeckSchema, require_in_channels
from detcli.models.csp import CSPLayer
from detcli.models.layers import (
    ActConfig,
    ConvModule,
    NormConfig,
    bn_momentum_003,
    conv_module,
    kaiming_init,
    silu_act,
)
from detcli.registry import NECKS


class CSPNeXtPAFPNConfig(NeckSchema):
    """CSPNeXtPAFPN settings. ``in_channels`` is derived from the backbone; set it only to
    assert it. ``act_cfg`` defaults to SiLU (MMDetection's class says Swish, the same function)."""

    type: Literal["CSPNeXtPAFPN"] = "CSPNeXtPAFPN"
    in_channels: Maybe[list[int]] = None
    out_channels: int = Field(256, ge=1)
    num_csp_blocks: int = Field(3, ge=1)
    use_depthwise: bool = False
    expand_ratio: float = Field(0.5, gt=0)
    upsample_mode: Literal["nearest", "bilinear"] = "nearest"  # x2, as upsample_cfg
    norm_cfg: NormConfig = Field(default_factory=bn_momentum_003)
    act_cfg: ActConfig = Field(default_factory=silu_act)

    def connect(self, in_channels: list[int], source: str, where: str) -> list[int]:
        """``in_channels`` derived from (or checked against) the backbone's -> one map of
        ``out_channels`` per input level."""
        derive_or_check(self, "in_channels", list(in_channels), source, f"{where}.in_channels")
        if len(in_channels) < 2:
            raise ValueError(f"{where} (CSPNeXtPAFPN) needs at least two input levels, got "
                             f"{list(in_channels)} from {source}")
        return [self.out_channels] * len(in_channels)


@NECKS.register(CSPNeXtPAFPNConfig)
class CSPNeXtPAFPN(nn.Module):
    """L maps (N, C_l, H_l, W_l) -> L maps (N, O, H_l, W_l); see the module docstring."""

    def __init__(
        self,
        *,
        in_channels: Sequence[int] | None,
        out_channels: int = 256,
        num_csp_blocks: int = 3,
        use_depthwise: bool = False,
        expand_ratio: float = 0.5,
        upsample_mode: str = "nearest",
        norm_cfg: NormConfig | None = None,
        act_cfg: ActConfig | None = None,
    ) -> None:
        super().__init__()
        in_channels = require_in_channels("CSPNeXtPAFPN", in_channels, "backbone's outputs")
        if len(in_channels) < 2:
            raise ConfigError(f"CSPNeXtPAFPN needs at least two input levels, got in_channels "
                              f"{list(in_channels)}")
        norm_cfg = norm_cfg or bn_momentum_003()
        act = (act_cfg or silu_act()).type
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.upsample_mode = upsample_mode
        chans = self.in_channels

        def csp(c_in: int, c_out: int) -> CSPLayer:
            return CSPLayer(c_in, c_out, num_blocks=num_csp_blocks, add_identity=False,
                            use_depthwise=use_depthwise, expand_ratio=expand_ratio,
                            norm_cfg=norm_cfg, activation=act)

        self.reduce_layers = nn.ModuleList()
        self.top_down_blocks = nn.ModuleList()
        for level in range(len(chans) - 1, 0, -1):
            self.reduce_layers.append(ConvModule(chans[level], chans[level - 1], 1,
                                                 norm_cfg=norm_cfg, activation=act))
            self.top_down_blocks.append(csp(chans[level - 1] * 2, chans[level - 1]))
        self.downsamples = nn.ModuleList()
        self.bottom_up_blocks = nn.ModuleList()
        for level in range(len(chans) - 1):
            self.downsamples.append(conv_module(use_depthwise, chans[level], chans[level], 3,
                                                stride=2, padding=1, norm_cfg=norm_cfg,
                                                activation=act))
            self.bottom_up_blocks.append(csp(chans[level] * 2, chans[level + 1]))
        self.out_convs = nn.ModuleList([
            conv_module(use_depthwise, c, out_channels, 3, padding=1, norm_cfg=norm_cfg,
                        activation=act) for c in chans])
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """MMDetection's init_cfg: Kaiming uniform (a = sqrt(5), fan_in) for every conv."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                kaiming_init(m, a=5 ** 0.5, mode="fan_in", nonlinearity="leaky_relu",
                             distribution="uniform")

    def forward(self, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        num_levels = len(self.in_channels)
        if len(inputs) != num_levels:
            raise DetError(f"CSPNeXtPAFPN got {len(inputs)} feature maps for in_channels "
                           f"{self.in_channels}")
        # top-down: inner[l] is level l's fused map; inner[top] is the reduced deepest input
        inner = [inputs[-1]]
        for j, level in enumerate(range(num_levels - 1, 0, -1)):
            top = self.reduce_layers[j](inner[0])  # (N, C_{l-1}, H_l, W_l)
            inner[0] = top
            up = F.interpolate(top, scale_factor=2.0, mode=self.upsample_mode)
            inner.insert(0, self.top_down_blocks[j](torch.cat([up, inputs[level - 1]], 1)))
        # bottom-up
        outs = [inner[0]]
        for level in range(num_levels - 1):
            down = self.downsamples[level](outs[-1])  # (N, C_l, H_{l+1}, W_{l+1})
            outs.append(self.bottom_up_blocks[level](torch.cat([down, inner[level + 1]], 1)))
        return tuple(conv(x) for conv, x in zip(self.out_convs, outs))
