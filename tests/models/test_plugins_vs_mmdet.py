"""GeneralizedAttention, NonLocal2d and a ResNet carrying them against MMCV / MMDetection 3.3
(tests/fixtures/mmdet/plugins.pt, from tools/mmdet_fixtures/plugins.py), same seeded weights."""

from pathlib import Path

import pytest
import torch

from detcli.models.backbones import ResNetConfig
from detcli.models.generalized_attention import GeneralizedAttention
from detcli.models.non_local import NonLocal2d
from detcli.models.layers import NormConfig
from detcli.registry import BACKBONES
from tests.fixtures.mmdet.plugins_weights import plugin_state
from tests.models.backbones.seeded import seeded_input

FIXTURE = torch.load(Path(__file__).parents[1] / "fixtures" / "mmdet" / "plugins.pt",
                     weights_only=False)
SEED = FIXTURE["seed"]


def shapes_of(module):
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def check_block(block, entry):
    assert shapes_of(block) == entry["shapes"]  # MMCV's names, shapes and order
    block.load_state_dict(plugin_state(entry["shapes"], SEED), strict=True)
    with torch.no_grad():
        out = block.eval()(seeded_input(entry["input"], SEED))
    torch.testing.assert_close(out, entry["out"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(FIXTURE["attention"]))
def test_generalized_attention_equals_mmcv(name):
    entry = FIXTURE["attention"][name]
    check_block(GeneralizedAttention(entry["input"][1], **entry["kwargs"]), entry)


@pytest.mark.parametrize("name", sorted(FIXTURE["non_local"]))
def test_non_local_equals_mmcv(name):
    entry = FIXTURE["non_local"][name]
    kwargs = dict(entry["kwargs"])
    if "norm_cfg" in kwargs:
        kwargs["norm_cfg"] = NormConfig(**kwargs["norm_cfg"])
    check_block(NonLocal2d(entry["input"][1], **kwargs), entry)


def resnet_from(cfg):
    return BACKBONES.build(ResNetConfig.model_validate(cfg))


@pytest.mark.parametrize("name", sorted(FIXTURE["resnets"]))
def test_resnet_with_plugins_equals_mmdet(name):
    entry = FIXTURE["resnets"][name]
    model = resnet_from(entry["cfg"]).eval()
    assert shapes_of(model) == entry["shapes"]
    model.load_state_dict(plugin_state(entry["shapes"], SEED), strict=True)
    with torch.no_grad():
        outs = model(seeded_input(entry["input"], SEED))
    for out, expected in zip(outs, entry["outs"], strict=True):
        # Random weights grow the features to ~1e4 by stage 4; float32 rounding there is relative
        # to the tensor's scale, so an element near 0 is held to 2e-6 of the largest one.
        scale = float(expected.abs().max())
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=max(1e-4, 2e-6 * scale))


def test_attention_resnet50_keys_are_mmdetections():
    entry = FIXTURE["names"]["resnet50_attn1111"]
    assert shapes_of(resnet_from(entry["cfg"])) == entry["shapes"]


def test_non_local_dot_product_by_hand():
    # C = 2, C' = 1, 1 x 2 map: theta = phi = g = identity on channel 0, conv_out copies back
    block = NonLocal2d(2, mode="dot_product")
    with torch.no_grad():
        for conv in (block.g.conv, block.theta.conv, block.phi.conv):
            conv.weight.copy_(torch.tensor([[[[1.0]], [[0.0]]]]))
            conv.bias.zero_()
        block.conv_out.conv.weight.copy_(torch.tensor([[[[1.0]]], [[[0.0]]]]))
        block.conv_out.conv.bias.zero_()
    x = torch.tensor([[[[1.0, 3.0]], [[5.0, 7.0]]]])  # (1, 2, 1, 2)
    # f = theta^T phi / P' = [[1, 3], [3, 9]] / 2; y = f @ [1, 3] = [5, 15]
    expected = torch.tensor([[[[6.0, 18.0]], [[5.0, 7.0]]]])
    torch.testing.assert_close(block(x), expected)


def test_generalized_attention_saliency_by_hand():
    # '0010' on one head: every query attends by softmax(u . k) over the keys
    block = GeneralizedAttention(2, num_heads=1, kv_stride=1, attention_type="0010")
    with torch.no_grad():
        block.key_conv.weight.copy_(torch.eye(2)[..., None, None])
        block.value_conv.weight.copy_(torch.eye(2)[..., None, None])
        block.proj_conv.weight.copy_(torch.eye(2)[..., None, None])
        block.proj_conv.bias.zero_()
        block.appr_bias.copy_(torch.tensor([1.0, 0.0]))
        block.gamma.fill_(1.0)
    x = torch.tensor([[[[0.0, 2.0]], [[4.0, 8.0]]]])  # (1, 2, 1, 2)
    w = torch.softmax(torch.tensor([0.0, 2.0]), 0)  # u . k at the two keys
    attended = torch.stack([w @ torch.tensor([0.0, 2.0]), w @ torch.tensor([4.0, 8.0])])
    expected = x + attended[None, :, None, None]
    torch.testing.assert_close(block(x), expected)


def test_fresh_blocks_are_the_identity():
    x = torch.randn(1, 16, 5, 6)
    torch.testing.assert_close(GeneralizedAttention(16, num_heads=4)(x), x)
    torch.testing.assert_close(NonLocal2d(16)(x), x)
