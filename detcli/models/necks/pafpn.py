"""Path Aggregation FPN (PANet, Liu et al. 2018), as MMDetection 3.3's ``PAFPN``.

N images, L used levels, O outputs, C output channels. An :class:`~detcli.models.necks.fpn.FPN`
(same keys, laterals, top-down sums and ``fpn_convs``) followed by a bottom-up path: with
``P_j`` the FPN's outputs, ``N_0 = P_0`` and ``M_j = P_j + downsample_convs[j-1](M_{j-1})``
(a 3x3 stride-2 conv of the level below, ``M_0 = P_0``), output j > 0 is
``pafpn_convs[j-1](M_j)`` (a 3x3 conv). Extra levels (O > L) come from the result as in FPN:
max-pooling the last output, or the stride-2 ``fpn_convs`` on the last input, lateral or
output. The new convs have no norm unless ``norm_cfg`` and no activation (MMDetection's
``act_cfg`` is None for FPN and PAFPN); every conv starts Xavier-uniform, as FPN's.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from detcli.models.layers import ConvModule
from detcli.models.necks.fpn import FPN, FPNConfig
from detcli.registry import NECKS


class PAFPNConfig(FPNConfig):
    """PAFPN settings: FPN's (``in_channels`` derived from the backbone)."""

    type: Literal["PAFPN"] = "PAFPN"  # type: ignore[assignment]


@NECKS.register(PAFPNConfig)
class PAFPN(FPN):
    """FPN plus a bottom-up path; ``forward`` maps L_in feature maps to O maps of C channels."""

    def __init__(self, **fpn_options: object) -> None:
        super().__init__(**fpn_options)  # type: ignore[arg-type]
        used = self.backbone_end_level - self.start_level
        conv_args = dict(norm_cfg=fpn_options.get("norm_cfg"), activation=None, inplace=False)
        c = self.out_channels
        self.downsample_convs = nn.ModuleList(
            ConvModule(c, c, 3, stride=2, padding=1, **conv_args) for _ in range(used - 1))
        self.pafpn_convs = nn.ModuleList(
            ConvModule(c, c, 3, padding=1, **conv_args) for _ in range(used - 1))
        self.init_weights()

    def forward(self, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        if len(inputs) != len(self.in_channels):
            raise ValueError(f"PAFPN expects {len(self.in_channels)} feature maps "
                             f"(in_channels {self.in_channels}), got {len(inputs)}")
        laterals = [conv(inputs[self.start_level + j]) for j, conv in enumerate(self.lateral_convs)]
        for j in range(len(laterals) - 1, 0, -1):  # top-down, (N, C, H_j, W_j) each
            laterals[j - 1] = laterals[j - 1] + self._upsample(laterals[j], laterals[j - 1])
        inter = [self.fpn_convs[j](lat) for j, lat in enumerate(laterals)]
        for j in range(len(inter) - 1):  # bottom-up: (N, C, H_j, W_j) -> level j + 1's size
            inter[j + 1] = inter[j + 1] + self.downsample_convs[j](inter[j])
        outs = [inter[0]] + [conv(x) for conv, x in zip(self.pafpn_convs, inter[1:])]
        num_used = len(outs)
        if self.num_outs > num_used and not self.add_extra_convs:
            for _ in range(self.num_outs - num_used):
                outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        elif self.num_outs > num_used:
            source = {"on_input": inputs[self.backbone_end_level - 1],
                      "on_lateral": laterals[-1], "on_output": outs[-1]}[self.add_extra_convs]
            outs.append(self.fpn_convs[num_used](source))
            for i in range(num_used + 1, self.num_outs):
                prev = F.relu(outs[-1]) if self.relu_before_extra_convs else outs[-1]
                outs.append(self.fpn_convs[i](prev))
        return tuple(outs)
