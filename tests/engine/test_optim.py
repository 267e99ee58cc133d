"""Optimizer building: paramwise_cfg multipliers as MMCV decides them, frozen params left out."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from detcli.engine.config import AdamWConfig, CustomKey, ParamwiseConfig, SGDConfig
from detcli.engine.optim import auto_scale_factor, build_optimizer, param_groups
from detcli.errors import ConfigError


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.head = nn.Conv2d(4, 2, 1)
        self.frozen = nn.Linear(2, 2)
        for p in self.frozen.parameters():
            p.requires_grad_(False)


def groups_by_name(groups):
    return {name: (g["lr"], g["weight_decay"]) for g in groups for name in g["names"]}


def test_paramwise_rules_in_mmcv_order():
    paramwise = ParamwiseConfig(norm_decay_mult=0.0, bias_decay_mult=0.5,
                                custom_keys={"backbone.0": CustomKey(lr_mult=0.1, decay_mult=2.0),
                                             "backbone": CustomKey(lr_mult=0.5)})
    found = groups_by_name(param_groups(Net(), 0.02, 1e-4, paramwise))
    assert set(found) == {"backbone.0.weight", "backbone.0.bias", "backbone.1.weight",
                          "backbone.1.bias", "head.weight", "head.bias"}  # no frozen.*
    expected = {
        "backbone.0.weight": (0.002, 2e-4),  # the longest matching custom key wins
        "backbone.0.bias": (0.002, 2e-4),  # a custom key beats bias_decay_mult
        "backbone.1.weight": (0.01, 1e-4),  # "backbone" matches: custom key before norm rule
        "backbone.1.bias": (0.01, 1e-4),
        "head.weight": (0.02, 1e-4),
        "head.bias": (0.02, 5e-5),  # bias_decay_mult
    }
    for name, (lr, decay) in expected.items():
        assert found[name] == (pytest.approx(lr), pytest.approx(decay)), name


def test_norm_and_bias_rules_without_custom_keys():
    found = groups_by_name(param_groups(Net(), 0.01, 1e-4,
                                        ParamwiseConfig(norm_decay_mult=0.0, bias_decay_mult=0.0)))
    assert found["backbone.1.weight"] == (0.01, 0.0)
    assert found["backbone.1.bias"] == (0.01, 0.0)
    assert found["backbone.0.bias"] == (0.01, 0.0)
    assert found["head.weight"] == (0.01, 1e-4)


def test_same_multipliers_share_a_group_and_no_paramwise_is_one_group():
    groups = param_groups(Net(), 0.01, 1e-4, None)
    assert len(groups) == 1 and len(groups[0]["params"]) == 6
    assert groups[0]["initial_lr"] == 0.01


def test_build_sgd_and_adamw_with_lr_scale():
    sgd = build_optimizer(Net(), SGDConfig(lr=0.02, momentum=0.9, weight_decay=1e-4), lr_scale=0.5)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.param_groups[0]["lr"] == pytest.approx(0.01)
    assert sgd.param_groups[0]["momentum"] == 0.9
    adamw = build_optimizer(Net(), AdamWConfig(lr=1e-3, weight_decay=0.05))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["weight_decay"] == 0.05


def test_all_frozen_is_a_config_error():
    net = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        build_optimizer(net, SGDConfig())


def test_auto_scale_lr_uses_the_total_batch():
    assert auto_scale_factor(True, 16, samples_per_gpu=2, world_size=4) == 0.5
    assert auto_scale_factor(False, 16, samples_per_gpu=2, world_size=4) == 1.0
