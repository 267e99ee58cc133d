"""ResNet: output shapes, torchvision-compatible names, freezing, norm_eval, style, config checks."""

import pytest
import torch
import torchvision
from pydantic import ValidationError
from torch import nn

from detcli.models.backbones import ResNet, ResNetConfig
from detcli.registry import BACKBONES


@pytest.mark.parametrize(
    ("depth", "channels"),
    [(18, [8, 16, 32, 64]), (50, [32, 64, 128, 256])],  # base 8 * 2**i * expansion (1 or 4)
)
def test_outputs_have_stage_channels_and_strides_4_to_32(depth, channels):
    cfg = ResNetConfig(depth=depth, base_channels=8)
    model = BACKBONES.build(cfg)
    outs = model(torch.randn(2, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [
        (2, channels[0], 16, 16), (2, channels[1], 8, 8), (2, channels[2], 4, 4), (2, channels[3], 2, 2)
    ]
    assert cfg.out_channels() == channels == model.out_channels


def test_out_indices_select_stages():
    cfg = ResNetConfig(depth=18, base_channels=8, out_indices=[1, 3])
    model = BACKBONES.build(cfg)
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == cfg.out_channels() == [16, 64]


def test_state_dict_names_and_shapes_equal_torchvision_resnet50():
    ours = ResNet(depth=50).state_dict()
    theirs = {k: v for k, v in torchvision.models.resnet50(weights=None).state_dict().items()
              if not k.startswith("fc.")}
    assert set(ours) == set(theirs)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    assert "layer1.0.downsample.0.weight" in ours and "layer1.0.downsample.1.running_var" in ours


def test_forward_equals_torchvision_with_the_same_weights():
    tv = torchvision.models.resnet18(weights=None).eval()
    model = ResNet(depth=18).eval()
    model.load_state_dict({k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")})
    x = torch.randn(1, 3, 64, 64)
    expected = tv.layer4(tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))))))
    torch.testing.assert_close(model(x)[-1], expected)


def test_frozen_stages_stop_gradients_and_stay_in_eval():
    model = ResNet(depth=18, base_channels=8, frozen_stages=1, norm_eval=False)
    model.train()
    for name, param in model.named_parameters():
        frozen = name.startswith(("conv1.", "bn1.", "layer1."))
        assert param.requires_grad is not frozen, name
    assert not model.bn1.training and not model.layer1[0].bn1.training
    assert model.layer2[0].bn1.training  # norm_eval is off: later BNs train


def test_norm_eval_keeps_every_batchnorm_in_eval_after_train():
    model = ResNet(depth=18, base_channels=8)  # norm_eval defaults to true
    model.train()
    assert model.training
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(bn.training for bn in bns)
    before = model.layer2[0].bn1.running_mean.clone()
    model(torch.randn(2, 3, 32, 32))
    assert torch.equal(model.layer2[0].bn1.running_mean, before)  # statistics are not updated


def test_zero_init_residual_zeroes_the_last_norm_of_each_block():
    model = ResNet(depth=50, base_channels=8)
    assert torch.equal(model.layer1[0].bn3.weight, torch.zeros(32))
    assert torch.equal(model.layer1[0].bn2.weight, torch.ones(8))
    plain = ResNet(depth=18, base_channels=8, zero_init_residual=False)
    assert torch.equal(plain.layer1[0].bn2.weight, torch.ones(8))


def test_caffe_style_strides_the_1x1_conv_pytorch_style_the_3x3():
    caffe = ResNet(depth=50, base_channels=8, style="caffe")
    pytorch = ResNet(depth=50, base_channels=8, style="pytorch")
    assert (caffe.layer2[0].conv1.stride, caffe.layer2[0].conv2.stride) == ((2, 2), (1, 1))
    assert (pytorch.layer2[0].conv1.stride, pytorch.layer2[0].conv2.stride) == ((1, 1), (2, 2))
    x = torch.randn(1, 3, 64, 64)
    assert [o.shape for o in caffe(x)] == [o.shape for o in pytorch(x)]


def test_dilation_keeps_resolution_of_an_unstrided_stage():
    model = ResNet(depth=18, base_channels=8, strides=[1, 2, 2, 1], dilations=[1, 1, 1, 2])
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[-1] for o in outs] == [16, 8, 4, 4]


def test_channels_last_and_autocast_forward():
    model = ResNet(depth=18, base_channels=8).eval()
    x = torch.randn(1, 3, 64, 64)
    expected = model(x)
    cl_model = model.to(memory_format=torch.channels_last)
    got = cl_model(x.to(memory_format=torch.channels_last))
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert cl_model(x)[-1].dtype == torch.bfloat16


def test_config_rejects_bad_values_with_messages():
    with pytest.raises(ValidationError, match="18, 34, 50, 101 or 152"):
        ResNetConfig(depth=42)
    with pytest.raises(ValidationError, match="need one entry per stage"):
        ResNetConfig(num_stages=3)
    with pytest.raises(ValidationError, match=r"out_indices \[0, 4\] must be non-empty, each in \[0, 4\)"):
        ResNetConfig(out_indices=[0, 4])
    with pytest.raises(ValidationError, match="frozen_stages"):
        ResNetConfig(frozen_stages=5)
    with pytest.raises(ValidationError, match="extra"):
        ResNetConfig(deep_stems=True)
    with pytest.raises(ValidationError, match="depth"):  # checked by the config, not ResNet()
        ResNetConfig(depth=42)


def test_init_cfg_false_means_no_checkpoint():
    cfg = ResNetConfig.model_validate({"init_cfg": False})
    assert cfg.init_cfg is None
    ResNet(depth=18, base_channels=8).init_weights()  # no checkpoint: a no-op
