"""ResNet plugins: the ContextBlock computed by hand and in any memory layout, placement by stage
and position, checks."""

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from detcli.errors import ConfigError
from detcli.models.backbones import ResNet, ResNetConfig
from detcli.models.plugins import ContextBlock, PluginConfig


def test_context_block_adds_the_attention_pooled_context():
    torch.manual_seed(0)
    block = ContextBlock(4, ratio=0.5).eval()
    nn.init.normal_(block.channel_add_conv[-1].weight)
    x = torch.randn(2, 4, 3, 5)
    with torch.no_grad():
        logits = block.conv_mask(x).flatten(1)  # (N, P)
        weights = torch.softmax(logits, dim=1)
        context = (x.flatten(2) * weights[:, None]).sum(-1)[..., None, None]  # (N, C, 1, 1)
        expected = x + block.channel_add_conv(context)
        torch.testing.assert_close(block(x), expected)


def test_fresh_context_blocks_are_identity_or_half():
    x = torch.randn(1, 8, 4, 4)
    add = ContextBlock(8, ratio=0.25)
    mul = ContextBlock(8, ratio=0.25, pooling_type="avg", fusion_types=("channel_mul",))
    torch.testing.assert_close(add(x), x)  # last conv zero: adds 0
    torch.testing.assert_close(mul(x), x * 0.5)  # sigmoid(0)
    with pytest.raises(ConfigError, match="ratio 0.05 of 8 channels"):
        ContextBlock(8, ratio=0.05)


def test_plugins_go_to_the_chosen_stages_and_positions():
    plugins = [PluginConfig(cfg={"type": "ContextBlock", "ratio": 0.25},
                            stages=[False, True, False, True], position="after_conv3"),
               PluginConfig(cfg={"type": "ContextBlock", "ratio": 0.5, "postfix": 1},
                            position="after_conv1")]
    model = ResNet(depth=50, base_channels=8, plugins=plugins)
    for i, layer in enumerate(model.res_layers):
        for block in layer:
            assert hasattr(block, "context_block") is (i in (1, 3))
            assert block.plugin_names["after_conv1"] == ["context_block1"]
    assert model.layer2[0].context_block.conv_mask.in_channels == 64  # conv3's output, 16 * 4
    assert model.layer2[0].context_block1.conv_mask.in_channels == 16  # conv1's output
    assert [o.shape[1] for o in model.eval()(torch.randn(1, 3, 32, 32))] == [32, 64, 128, 256]


def test_plugin_settings_are_checked():
    gcb = {"cfg": {"type": "ContextBlock", "ratio": 0.25}, "position": "after_conv3"}
    with pytest.raises(ValidationError, match="plugins need bottleneck blocks"):
        ResNetConfig(depth=18, plugins=[gcb])
    with pytest.raises(ValidationError, match=r"plugins\[0\].stages \[True, True\] needs one entry"):
        ResNetConfig(plugins=[{**gcb, "stages": [True, True]}])
    with pytest.raises(ValidationError, match="after_conv1', 'after_conv2' or 'after_conv3'"):
        ResNetConfig(plugins=[{**gcb, "position": "after_conv4"}])
    with pytest.raises(ConfigError, match="two 'context_block' blocks in one bottleneck"):
        ResNet(depth=50, base_channels=8, plugins=[PluginConfig(**gcb), PluginConfig(**gcb)])



def layouts(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """``x`` (N, C, H, W) with the same values in other memory layouts."""
    n, c, h, w = x.shape
    wider = torch.zeros(n, c, h, w + 1)
    wider[..., :w] = x
    return {
        "channels_last": x.contiguous(memory_format=torch.channels_last),
        "a W slice": wider[..., :w],  # rows of w + 1: H and W do not merge into one dim
        "H and W transposed": x.transpose(2, 3).contiguous().transpose(2, 3),
    }


@pytest.mark.parametrize("pooling_type", ["att", "avg"])
def test_context_block_in_any_memory_layout_equals_the_contiguous_one(pooling_type):
    torch.manual_seed(0)
    block = ContextBlock(8, ratio=0.25, pooling_type=pooling_type,
                         fusion_types=("channel_add", "channel_mul")).eval()
    for transform in (block.channel_add_conv, block.channel_mul_conv):
        nn.init.normal_(transform[-1].weight)  # not the zero init: the context must matter
    x = torch.randn(2, 8, 5, 7)
    with torch.no_grad():
        expected = block(x)
        assert (expected - x).abs().max() > 0.1  # the block changes its input
        for name, same in layouts(x).items():
            assert torch.equal(same, x) and not same.is_contiguous()
            torch.testing.assert_close(block(same), expected, rtol=1e-6, atol=1e-6, msg=name)
        block = block.to(memory_format=torch.channels_last)  # a channels_last model too
        torch.testing.assert_close(block(x.contiguous(memory_format=torch.channels_last)),
                                   expected, rtol=1e-6, atol=1e-6)
