"""The classification and regression conv towers of RetinaNet-like dense heads, built once.

C input channels, F ``feat_channels``, N images, H x W a feature map.

RetinaNet, ATSS and FCOS run, on every FPN level, two stacks of ``num_convs`` 3x3 conv (+ norm)
+ ReLU layers side by side: ``cls_convs`` feeds the classifier, ``reg_convs`` the box regressor
(and, in ATSS and FCOS, the centerness branch). Their state-dict keys are MMDetection's
(``cls_convs.0.conv.weight``, ``reg_convs.1.gn.weight``, ...), so its checkpoints load as they
are. The two towers are built layer by layer alternately, as MMDetection's RetinaHead and
ATSSHead build them (its AnchorFreeHead, FCOS's, builds the whole cls tower first); no head
relies on the order, since each re-initialises its convs in ``init_weights``.

``dcn_on_last_conv`` (MMDetection's AnchorFreeHead option) makes the last conv of each tower a
DCNv2 (:class:`~detcli.models.dcn.ModulatedDeformConv2dPack`: ``cls_convs.3.conv.weight``,
``cls_convs.3.conv.conv_offset.weight`` / ``.bias``), its norm and ReLU as before.

The RPN's single shared conv (``rpn_conv``) is not such a pair and keeps its own layers.
"""

from __future__ import annotations

from typing import Literal, Union

from torch import Tensor, nn

from detcli.models.dcn import ModulatedDeformConv2dPack
from detcli.models.layers import ConvModule, NormConfig


def twin_towers(
    in_channels: int,
    feat_channels: int,
    num_convs: int,
    *,
    norm_cfg: NormConfig | None = None,
    bias: Union[Literal["auto"], bool] = "auto",
    dcn_on_last_conv: bool = False,
) -> tuple[nn.ModuleList, nn.ModuleList, int]:
    """(cls_convs, reg_convs, the channels their outputs have): each a ModuleList of
    ``num_convs`` 3x3 ConvModules C -> F -> ... -> F (C when ``num_convs`` is 0), the last a
    DCNv2 one with ``dcn_on_last_conv``."""
    cls_convs, reg_convs = nn.ModuleList(), nn.ModuleList()
    channels = in_channels
    for i in range(num_convs):
        for tower in (cls_convs, reg_convs):
            layer = ConvModule(channels, feat_channels, 3, padding=1, bias=bias,
                               norm_cfg=norm_cfg)
            if dcn_on_last_conv and i == num_convs - 1:
                # the same settings on MMCV's DCNv2 (ConvModule's bias rule: none before a norm)
                layer.conv = ModulatedDeformConv2dPack(
                    channels, feat_channels, 3, padding=1,
                    bias=(norm_cfg is None) if bias == "auto" else bias)
            tower.append(layer)
        channels = feat_channels
    return cls_convs, reg_convs, channels


def run_tower(tower: nn.ModuleList, x: Tensor) -> Tensor:
    """(N, C, H, W) through every layer of ``tower`` -> (N, F, H, W)."""
    for conv in tower:
        x = conv(x)
    return x
