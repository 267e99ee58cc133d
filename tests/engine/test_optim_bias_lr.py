"""paramwise_cfg.bias_lr_mult (FCOS's ``bias_lr_mult = 2, bias_decay_mult = 0``) and the norm
rule of MMCV: a norm layer's bias follows ``norm_decay_mult`` (1 when unset), never the bias
multipliers."""

from __future__ import annotations

import pytest
from torch import nn

from detcli.engine.config import CustomKey, ParamwiseConfig
from detcli.engine.optim import param_groups, param_rule


class Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.gn = nn.GroupNorm(2, 4)
        self.special = nn.Conv2d(4, 4, 1)


def found(paramwise):
    groups = param_groups(Head(), 0.01, 1e-4, paramwise)
    return {name: (g["lr"], g["weight_decay"]) for g in groups for name in g["names"]}


def test_fcos_rule_doubles_bias_lr_and_drops_bias_decay_but_not_for_norm_biases():
    got = found(ParamwiseConfig(bias_lr_mult=2.0, bias_decay_mult=0.0))
    expected = {
        "conv.weight": (0.01, 1e-4),
        "conv.bias": (0.02, 0.0),  # bias_lr_mult and bias_decay_mult
        "gn.weight": (0.01, 1e-4),
        "gn.bias": (0.01, 1e-4),  # a norm's bias: norm_decay_mult, unset = 1 (MMCV)
        "special.bias": (0.02, 0.0),
    }
    for name, (lr, decay) in expected.items():
        assert got[name] == (pytest.approx(lr), pytest.approx(decay)), name


def test_custom_keys_still_win_and_norm_decay_mult_applies_to_norm_biases():
    got = found(ParamwiseConfig(bias_lr_mult=2.0, norm_decay_mult=0.0,
                                custom_keys={"special": CustomKey(lr_mult=0.1)}))
    assert got["special.bias"] == (pytest.approx(0.001), pytest.approx(1e-4))
    assert got["gn.bias"] == (pytest.approx(0.01), 0.0)
    head = Head()
    rule = param_rule("conv.bias", head.conv, ParamwiseConfig(bias_lr_mult=2.0, bias_decay_mult=0))
    assert (rule.lr_mult, rule.decay_mult, rule.reason) == (2.0, 0.0,
                                                            "bias_lr_mult, bias_decay_mult")
