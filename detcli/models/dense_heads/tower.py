"""The classification and regression conv towers of RetinaNet-like dense heads, built once.

C input channels, F ``feat_channels``, N images, H x W a feature map.

RetinaNet, ATSS and FCOS run, on every FPN level, two stacks of ``num_convs`` 3x3 conv (+ norm)
+ ReLU layers side by side: ``cls_convs`` feeds the classifier, ``reg_convs`` the box regressor
(and, in ATSS and FCOS, the centerness branch). Their state-dict keys are MMDetection's
(``cls_convs.0.conv.weight``, ``reg_convs.1.gn.weight``, ...), so its checkpoints load as they
are. The two towers are built layer by layer alternately, as MMDetection builds them: the order
fixes which random numbers each conv's initial weights draw.

The RPN's single shared conv (``rpn_conv``) is not such a pair and keeps its own layers.
"""

from __future__ import annotations

from typing import Literal, Union

from torch import Tensor, nn

from detcli.models.layers import ConvModule, NormConfig


def twin_towers(
    in_channels: int,
    feat_channels: int,
    num_convs: int,
    *,
    norm_cfg: NormConfig | None = None,
    bias: Union[Literal["auto"], bool] = "auto",
) -> tuple[nn.ModuleList, nn.ModuleList, int]:
    """(cls_convs, reg_convs, the channels their outputs have): each a ModuleList of
    ``num_convs`` 3x3 ConvModules C -> F -> ... -> F (C when ``num_convs`` is 0)."""
    cls_convs, reg_convs = nn.ModuleList(), nn.ModuleList()
    channels = in_channels
    for _ in range(num_convs):
        for tower in (cls_convs, reg_convs):
            tower.append(ConvModule(channels, feat_channels, 3, padding=1, bias=bias,
                                    norm_cfg=norm_cfg))
        channels = feat_channels
    return cls_convs, reg_convs, channels


def run_tower(tower: nn.ModuleList, x: Tensor) -> Tensor:
    """(N, C, H, W) through every layer of ``tower`` -> (N, F, H, W)."""
    for conv in tower:
        x = conv(x)
    return x
