"""ResNetV1d, ResNeXt and DCN stages: shapes, layout, torchvision weights, freezing, checks."""

import pytest
import torch
import torchvision
from pydantic import ValidationError
from torch import nn

from detcli.errors import ConfigError
from detcli.models.backbones import (
    ResNet,
    ResNetConfig,
    ResNetV1d,
    ResNetV1dConfig,
    ResNeXt,
    ResNeXtConfig,
)
from detcli.models.dcn import DCNConfig, ModulatedDeformConv2dPack
from detcli.models.pretrained import open_mmlab_url, torchvision_url
from detcli.registry import BACKBONES


def test_v1d_deep_stem_and_avg_down_layout_and_shapes():
    model = BACKBONES.build(ResNetV1dConfig(depth=50, base_channels=16))
    stem = model.stem
    assert [(m.in_channels, m.out_channels, m.stride) for m in stem if isinstance(m, nn.Conv2d)] \
        == [(3, 8, (2, 2)), (8, 8, (1, 1)), (8, 16, (1, 1))]
    pool, conv, _ = model.layer2[0].downsample
    assert isinstance(pool, nn.AvgPool2d) and pool.stride == 2 and conv.stride == (1, 1)
    # stride 1 (only the width changes): MMDetection still puts a 1x1 pool first (names .1, .2)
    assert model.layer1[0].downsample[0].stride == 1
    assert not hasattr(model, "conv1")
    outs = model(torch.randn(2, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(2, 64, 16, 24), (2, 128, 8, 12), (2, 256, 4, 6),
                                              (2, 512, 2, 3)]


def test_v1d_frozen_stages_freeze_the_deep_stem():
    model = ResNetV1d(depth=18, base_channels=8, frozen_stages=1, norm_eval=False)
    model.train()
    model(torch.randn(2, 3, 32, 32))[-1].sum().backward()
    for name, param in model.named_parameters():
        frozen = name.startswith(("stem.", "layer1."))
        assert param.requires_grad is not frozen, name
        assert (param.grad is None) is frozen, name
    assert not model.stem[1].training and model.layer2[0].bn1.training


def test_v1d_config_does_not_take_deep_stem():
    with pytest.raises(ValidationError, match="extra"):
        ResNetV1dConfig(deep_stem=False)
    assert ResNetConfig(deep_stem=True, avg_down=True).describe("b") == "b (ResNet depth 50)"


def test_resnext_width_groups_and_output_channels():
    cfg = ResNeXtConfig(depth=50, groups=32, base_width=4)
    with torch.device("meta"):
        model = BACKBONES.build(cfg)
        x101 = ResNeXt(depth=101, groups=64, base_width=4)
    conv2 = model.layer1[0].conv2
    assert (conv2.in_channels, conv2.groups) == (128, 32)  # floor(64 * 4 / 64) * 32
    assert model.layer4[0].conv2.in_channels == 1024  # floor(512 * 4 / 64) * 32
    assert cfg.out_channels() == [256, 512, 1024, 2048] == model.out_channels
    assert x101.layer1[0].conv2.weight.shape == (256, 4, 3, 3)  # 64x4d: 64 groups of 4


def test_resnext_forward_equals_torchvision_with_its_weights():
    torch.manual_seed(0)
    # torchvision's ResNeXt-50 builder with 8 groups of 2 (resnext50_32x4d is 32 groups of 4)
    tv = torchvision.models.resnet.ResNet(torchvision.models.resnet.Bottleneck, [3, 4, 6, 3],
                                          groups=8, width_per_group=2).eval()
    for m in tv.modules():  # random statistics, so every norm does real work
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    model = ResNeXt(depth=50, groups=8, base_width=2).eval()
    result = model.load_state_dict({k: v for k, v in tv.state_dict().items()
                                    if not k.startswith("fc.")})
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        stem = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        c2 = tv.layer1(stem)
        c5 = tv.layer4(tv.layer3(tv.layer2(c2)))
        outs = model(x)
    torch.testing.assert_close(outs[0], c2)
    torch.testing.assert_close(outs[-1], c5)


def test_torchvision_and_open_mmlab_resnext_checkpoints_resolve():
    assert torchvision_url("resnext101_64x4d").endswith("resnext101_64x4d-173b62eb.pth")
    assert torchvision_url("resnext101_32x8d").endswith("resnext101_32x8d-8ba56ff5.pth")
    # MMCV's open_mmlab.json names of the ResNeXt and RegNet configs' weights
    assert open_mmlab_url("resnext101_64x4d").endswith("/resnext101_64x4d-ee2c6f71.pth")
    assert open_mmlab_url("regnetx_3.2gf").endswith("/regnetx_3.2gf-c2599b0f.pth")


def test_resnext_rejects_basic_block_depths():
    with pytest.raises(ValidationError, match="50, 101 or 152"):
        ResNeXtConfig(depth=18)
    with pytest.raises(ConfigError, match="takes no dcn, groups or plugins"):
        ResNeXt(depth=18, base_channels=8, groups=4)
    with pytest.raises(ValidationError, match="dcn needs bottleneck blocks"):  # the config's check
        ResNetConfig(depth=18, base_channels=8, dcn=DCNConfig(), stage_with_dcn=[True] * 4)


def test_dcn_stages_get_deformable_conv2_only():
    model = ResNet(depth=50, base_channels=8, dcn=DCNConfig(),
                   stage_with_dcn=[False, True, False, True])
    kinds = [[type(block.conv2) for block in layer] for layer in model.res_layers]
    assert all(k is nn.Conv2d for k in kinds[0] + kinds[2])
    assert all(k is ModulatedDeformConv2dPack for k in kinds[1] + kinds[3])
    assert model.layer2[0].conv2.stride == (2, 2)  # the stride stays on the 3x3 conv
    # MMDetection's init: zero offsets, not the Kaiming init of the other convs
    assert model.layer2[1].conv2.conv_offset.weight.abs().sum() == 0
    fallback = ResNet(depth=50, base_channels=8, dcn=DCNConfig(fallback_on_stride=True),
                      stage_with_dcn=[True] * 4)
    assert not any(isinstance(m, ModulatedDeformConv2dPack) for m in fallback.modules())


def test_dcn_loads_imagenet_conv2_weights_and_keeps_offsets():
    plain = ResNet(depth=50, base_channels=8)
    dcn = ResNet(depth=50, base_channels=8, dcn=DCNConfig(), stage_with_dcn=[False, True, True, True])
    result = dcn.load_state_dict(plain.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert result.missing_keys and all(".conv2.conv_offset." in k for k in result.missing_keys)
    assert torch.equal(dcn.layer3[0].conv2.weight, plain.layer3[0].conv2.weight)


def test_dcn_settings_are_checked_in_the_config():
    with pytest.raises(ValidationError, match=r"stage_with_dcn \[True, True\] needs one entry"):
        ResNetConfig(dcn={"type": "DCNv2"}, stage_with_dcn=[True, True])
    with pytest.raises(ValidationError, match="dcn needs bottleneck blocks"):
        ResNetConfig(depth=34, dcn={"type": "DCNv2"}, stage_with_dcn=[False, True, True, True])
    with pytest.raises(ValidationError, match="DCN' or 'DCNv2'"):
        ResNetConfig(dcn={"type": "DCNv3"})
    ResNetConfig(num_stages=3, strides=[1, 2, 2], dilations=[1, 1, 1], out_indices=[0, 1, 2])
