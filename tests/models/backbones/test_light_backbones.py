"""RegNet and MobileNetV2: widths from the design, torchvision weights converted, freezing."""

import pytest
import torch
import torchvision
from pydantic import ValidationError
from torch import nn

from detcli.models.backbones import MobileNetV2, MobileNetV2Config, RegNet, RegNetConfig
from detcli.models.backbones.mobilenet_v2 import make_divisible, mobilenet_v2_from_torchvision
from detcli.models.backbones.regnet import ARCHS, regnet_from_torchvision, regnet_stages
from detcli.models.pretrained import PretrainedInit, torchvision_url
from detcli.registry import BACKBONES


def randomise_norms(model: nn.Module) -> nn.Module:
    """Random BN statistics and affine values, so every norm does real work."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    return model.eval()


def test_regnet_stage_widths_follow_the_design():
    # MMDetection's docstring: regnetx_3.2gf -> 96, 192, 432, 1008 channels
    stages = regnet_stages(ARCHS["regnetx_3.2gf"])
    assert (stages.widths, stages.blocks, stages.groups) == (
        [96, 192, 432, 1008], [2, 6, 15, 2], [2, 4, 9, 21])
    cfg = RegNetConfig(arch="regnetx_3.2gf", out_indices=[1, 3])
    assert cfg.out_channels() == [192, 1008]
    # w0 = 24, wa = 24.48, wm = 2.54: widths 24 * 2.54**k, k = round(log(1 + j wa / 24) /
    # log 2.54) for blocks j = 0..21 -> k = 0 for j = 0, 1 for j = 1..2, ...; rounded to 8
    assert regnet_stages(ARCHS["regnetx_400mf"]).widths == [32, 64, 160, 384]


def test_regnet_outputs_and_strides():
    model = BACKBONES.build(RegNetConfig(arch="regnetx_400mf"))
    outs = model(torch.randn(1, 3, 32, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 32, 8, 16), (1, 64, 4, 8), (1, 160, 2, 4),
                                              (1, 384, 1, 2)]
    assert model.layer1[0].conv2.groups == 2 and model.layer1[0].conv3.out_channels == 32


def test_regnet_equals_torchvision_with_its_converted_weights(tmp_path):
    tv = randomise_norms(torchvision.models.regnet_x_800mf())
    path = tmp_path / "regnet_x_800mf.pth"
    torch.save(tv.state_dict(), path)
    model = RegNet(arch="regnetx_800mf", init_cfg=PretrainedInit(checkpoint=str(path)))
    model.init_weights()  # torchvision's layout, converted on load
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = tv.trunk_output(tv.stem(x))
        torch.testing.assert_close(model(x)[-1], expected)


def test_regnet_3_2gf_conversion_covers_every_key_400mf_differs():
    tv = torchvision.models.regnet_x_3_2gf()
    with torch.device("meta"):
        ours = RegNet(arch="regnetx_3.2gf")
    converted = {k: tuple(v.shape) for k, v in regnet_from_torchvision(tv.state_dict()).items()}
    assert converted == {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert torchvision_url("regnet_x_3_2gf").endswith("regnet_x_3_2gf-f342aeae.pth")
    # torchvision rounds regnet_x_400mf's last width to 400, MMDetection's design gives 384
    tv400 = torchvision.models.regnet_x_400mf()
    assert tv400.trunk_output.block4[0].f.c[0].out_channels == 400
    assert regnet_stages(ARCHS["regnetx_400mf"]).widths[-1] == 384


def test_regnet_frozen_stages_and_config_checks():
    model = RegNet(arch="regnetx_400mf", frozen_stages=2, norm_eval=False)
    model.train()
    model(torch.randn(2, 3, 32, 32))[-1].sum().backward()
    for name, param in model.named_parameters():
        frozen = name.startswith(("conv1.", "bn1.", "layer1.", "layer2."))
        assert (param.grad is None) is frozen, name
    with pytest.raises(ValidationError, match="arch 'regnetx_5gf' is not one of"):
        RegNetConfig(arch="regnetx_5gf")
    with pytest.raises(ValidationError, match="need one entry per stage"):
        RegNetConfig(strides=[2, 2, 2])


def test_make_divisible_rounds_to_eight_within_ten_percent():
    assert [make_divisible(v) for v in (32, 16 * 0.5, 24 * 0.5, 160 * 0.35, 4)] == [32, 8, 16, 56, 8]
    assert make_divisible(12 * 0.5) == 8  # 6 -> 8: never below the divisor


def test_mobilenet_v2_outputs():
    cfg = MobileNetV2Config()
    model = BACKBONES.build(cfg)
    outs = model(torch.randn(1, 3, 32, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 24, 8, 16), (1, 32, 4, 8), (1, 96, 2, 4),
                                              (1, 1280, 1, 2)]
    assert cfg.out_channels() == [24, 32, 96, 1280] == model.out_channels
    assert MobileNetV2Config(widen_factor=0.5, out_indices=[0, 6]).out_channels() == [8, 160]
    first, later = model.layer1[0], model.layer2[1]
    assert not first.with_expand_conv and later.with_expand_conv and later.with_res_shortcut
    assert isinstance(later.depthwise_conv.activate, nn.ReLU6)


def test_mobilenet_v2_equals_torchvision_with_its_converted_weights(tmp_path):
    tv = randomise_norms(torchvision.models.mobilenet_v2())
    path = tmp_path / "mobilenet_v2.pth"
    torch.save(tv.state_dict(), path)
    model = MobileNetV2(out_indices=(1, 7), init_cfg=PretrainedInit(checkpoint=str(path)))
    model.init_weights()
    model.eval()
    assert set(mobilenet_v2_from_torchvision(tv.state_dict())) == set(model.state_dict())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        c2, c5 = model(x)
        torch.testing.assert_close(c2, tv.features[:4](x))  # features.1..3: layer1, layer2
        torch.testing.assert_close(c5, tv.features(x))
    assert torchvision_url("mobilenet_v2").endswith("mobilenet_v2-b0353104.pth")


def test_mobilenet_v2_frozen_stages_stop_gradients():
    model = MobileNetV2(widen_factor=0.5, frozen_stages=2)
    model.train()
    model(torch.randn(2, 3, 32, 32))[-1].sum().backward()
    for name, param in model.named_parameters():
        frozen = name.startswith(("conv1.", "layer1.", "layer2."))
        assert (param.grad is None) is frozen, name
    assert not model.layer2[0].depthwise_conv.bn.training and model.layer3[0].linear_conv.bn.training
    with pytest.raises(ValidationError, match="out_indices"):
        MobileNetV2Config(out_indices=[8])
