"""The one conv-tower builder of RetinaNet, ATSS and FCOS: MMDetection's state-dict keys,
pinned key by key, and the layers it stacks."""

from __future__ import annotations

import torch

from detcli.models.dcn import ModulatedDeformConv2dPack
from detcli.models.dense_heads import ATSSHead, FCOSHead, RetinaHead
from detcli.models.dense_heads.tower import run_tower, twin_towers
from detcli.models.layers import NormConfig

GN = NormConfig(type="GN", num_groups=4, requires_grad=True)


def tower_keys(head: torch.nn.Module) -> list[str]:
    return [k for k in head.state_dict() if k.startswith(("cls_convs", "reg_convs"))]


def test_retina_tower_keys_are_mmdetections():
    head = RetinaHead(num_classes=3, in_channels=8, stacked_convs=2, feat_channels=8)
    assert tower_keys(head) == [
        "cls_convs.0.conv.weight", "cls_convs.0.conv.bias",
        "cls_convs.1.conv.weight", "cls_convs.1.conv.bias",
        "reg_convs.0.conv.weight", "reg_convs.0.conv.bias",
        "reg_convs.1.conv.weight", "reg_convs.1.conv.bias",
    ]


def test_atss_and_fcos_tower_keys_are_mmdetections():
    gn_layer = ["conv.weight", "gn.weight", "gn.bias"]  # GN after the conv: no conv bias
    expected = [f"{tower}.{i}.{name}" for tower in ("cls_convs", "reg_convs") for i in (0, 1)
                for name in gn_layer]
    atss = ATSSHead(num_classes=3, in_channels=8, stacked_convs=2, feat_channels=8, norm_cfg=GN)
    fcos = FCOSHead(num_classes=3, in_channels=8, stacked_convs=2, feat_channels=8, norm_cfg=GN)
    assert tower_keys(atss) == expected
    assert tower_keys(fcos) == expected
    assert [k for k in fcos.state_dict() if not k.startswith(("cls_convs", "reg_convs"))] == [
        "conv_cls.weight", "conv_cls.bias", "conv_reg.weight", "conv_reg.bias",
        "conv_centerness.weight", "conv_centerness.bias",
        "scales.0.scale", "scales.1.scale", "scales.2.scale", "scales.3.scale", "scales.4.scale"]


def test_fcos_conv_bias_true_keeps_a_bias_before_the_norm():
    fcos = FCOSHead(num_classes=3, in_channels=8, stacked_convs=1, feat_channels=8, norm_cfg=GN,
                    conv_bias=True)
    assert "cls_convs.0.conv.bias" in fcos.state_dict()


def test_twin_towers_stack_3x3_convs_and_say_their_channels():
    cls_convs, reg_convs, channels = twin_towers(5, 7, 3)
    assert channels == 7 and len(cls_convs) == len(reg_convs) == 3
    assert [c.conv.in_channels for c in cls_convs] == [5, 7, 7]
    assert all(c.conv.kernel_size == (3, 3) and c.conv.padding == (1, 1) for c in reg_convs)
    assert cls_convs[0] is not reg_convs[0]  # two towers, no shared weights
    x = torch.randn(2, 5, 6, 4)
    expected = cls_convs[2](cls_convs[1](cls_convs[0](x)))
    assert torch.equal(run_tower(cls_convs, x), expected)
    assert run_tower(cls_convs, x).shape == (2, 7, 6, 4)


def test_no_convs_pass_the_features_through():
    cls_convs, reg_convs, channels = twin_towers(5, 7, 0)
    x = torch.randn(1, 5, 3, 3)
    assert channels == 5 and len(cls_convs) == 0 and torch.equal(run_tower(reg_convs, x), x)


def test_dcn_on_last_conv_makes_each_towers_last_conv_a_dcnv2():
    cls_convs, reg_convs, _ = twin_towers(5, 8, 3, norm_cfg=GN, dcn_on_last_conv=True)
    keys = list(cls_convs.state_dict())
    assert keys == ["0.conv.weight", "0.gn.weight", "0.gn.bias",
                    "1.conv.weight", "1.gn.weight", "1.gn.bias",
                    "2.conv.weight", "2.conv.conv_offset.weight", "2.conv.conv_offset.bias",
                    "2.gn.weight", "2.gn.bias"]  # MMDetection's: no DCN bias before the GN
    assert isinstance(reg_convs[2].conv, ModulatedDeformConv2dPack)
    assert reg_convs[2].conv.conv_offset.out_channels == 27  # 3 x 9 taps: dy, dx, mask
    plain, _, _ = twin_towers(5, 8, 3, dcn_on_last_conv=True)
    assert "2.conv.bias" in plain.state_dict()  # no norm: the DCN keeps a bias, as a conv would
