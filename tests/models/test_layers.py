"""Norm configs, MMCV-named ConvModule, and the init helpers."""

import math

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from detcli.errors import ConfigError
from detcli.models.layers import ConvModule, NormConfig, bias_init_with_prob, build_norm


def test_build_norm_uses_mmcv_names_and_settings():
    name, bn = build_norm(NormConfig(eps=1e-3, momentum=0.03), 8, postfix=1)
    assert name == "bn1" and isinstance(bn, nn.BatchNorm2d)
    assert (bn.eps, bn.momentum, bn.num_features) == (1e-3, 0.03, 8)
    name, sync = build_norm(NormConfig(type="SyncBN"), 8)
    assert name == "bn" and isinstance(sync, nn.SyncBatchNorm)
    name, gn = build_norm(NormConfig(type="GN", num_groups=4), 8)
    assert name == "gn" and isinstance(gn, nn.GroupNorm) and gn.num_groups == 4


def test_requires_grad_false_freezes_affine_parameters():
    _, bn = build_norm(NormConfig(requires_grad=False), 4)
    assert [p.requires_grad for p in bn.parameters()] == [False, False]


def test_norm_config_checks_num_groups():
    with pytest.raises(ValidationError, match="needs num_groups"):
        NormConfig(type="GN")
    with pytest.raises(ValidationError, match="only valid for type 'GN'"):
        NormConfig(type="BN", num_groups=4)
    with pytest.raises(ValidationError):
        NormConfig(type="LN")
    assert NormConfig.model_validate({"type": "BN", "num_groups": False}).num_groups is None  # TOML "off"
    with pytest.raises(ConfigError, match="num_groups=3 does not divide 8 channels"):
        build_norm(NormConfig(type="GN", num_groups=3), 8)


def test_conv_module_state_dict_keys_follow_mmcv():
    plain = ConvModule(3, 4, 3, padding=1)
    assert set(plain.state_dict()) == {"conv.weight", "conv.bias"}  # bias="auto": no norm -> bias
    assert isinstance(plain.activate, nn.ReLU)
    with_bn = ConvModule(3, 4, 3, padding=1, norm_cfg=NormConfig())
    assert "conv.bias" not in with_bn.state_dict()
    assert {"conv.weight", "bn.weight", "bn.bias", "bn.running_mean"} <= set(with_bn.state_dict())
    with_gn = ConvModule(3, 4, 1, norm_cfg=NormConfig(type="GN", num_groups=2), activation=None)
    assert {"conv.weight", "gn.weight", "gn.bias"} == set(with_gn.state_dict())
    assert not hasattr(with_gn, "activate")


def test_conv_module_forward_is_conv_norm_act():
    module = ConvModule(1, 1, 1, norm_cfg=NormConfig()).eval()
    nn.init.constant_(module.conv.weight, -2.0)
    x = torch.tensor([[[[1.0, -1.0]]]])  # (1, 1, 1, 2)
    # conv: (-2, 2); BN in eval with mean 0, var 1, weight 1: x / sqrt(1 + 1e-5); ReLU: (0, ~2)
    expected = torch.tensor([[[[0.0, 2.0 / math.sqrt(1 + 1e-5)]]]])
    torch.testing.assert_close(module(x), expected)


def test_conv_module_init_matches_mmcv():
    module = ConvModule(2, 3, 1, norm_cfg=NormConfig())
    assert torch.equal(module.bn.weight, torch.ones(3)) and torch.equal(module.bn.bias, torch.zeros(3))
    no_norm = ConvModule(2, 3, 1)
    assert torch.equal(no_norm.conv.bias, torch.zeros(3))


def test_unknown_activation_names_the_choices():
    with pytest.raises(ConfigError,
                       match="unknown activation 'GELU'; supported: ReLU, LeakyReLU, SiLU, Swish"):
        ConvModule(1, 1, 1, activation="GELU")


def test_bias_init_with_prob_gives_the_prior():
    assert bias_init_with_prob(0.01) == pytest.approx(-math.log(99))  # -4.59512
    assert torch.sigmoid(torch.tensor(bias_init_with_prob(0.01))).item() == pytest.approx(0.01)
    with pytest.raises(ValueError, match="prior_prob"):
        bias_init_with_prob(1.0)
