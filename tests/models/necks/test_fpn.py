"""FPN: level counts and sizes for every extra-level mode, MMDetection key names, top-down sums."""

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from detcli.config.loader import validate_tree
from detcli.errors import ConfigError
from detcli.models.layers import NormConfig
from detcli.models.necks import FPN, FPNConfig
from detcli.registry import DETECTORS, NECKS

IN_CHANNELS = [8, 16, 32, 64]
SIZES = [32, 16, 8, 4]  # strides 4..32 of a 128x128 image


def _inputs():
    return [torch.randn(2, c, s, s) for c, s in zip(IN_CHANNELS, SIZES)]


@pytest.mark.parametrize("mode", [False, "on_input", "on_lateral", "on_output"])
def test_five_outputs_from_levels_1_to_3(mode):
    cfg = FPNConfig(out_channels=16, start_level=1, num_outs=5, add_extra_convs=mode)
    assert cfg.connect(IN_CHANNELS, "the test's backbone", "neck") == [16] * 5
    fpn = NECKS.build(cfg)
    outs = fpn(_inputs())
    # levels 1..3 keep their sizes; two extra levels halve (ceil) each time: 4 -> 2 -> 1
    assert [tuple(o.shape) for o in outs] == [(2, 16, s, s) for s in (16, 8, 4, 2, 1)]
    assert len(fpn.lateral_convs) == 3
    assert len(fpn.fpn_convs) == (3 if mode is False else 5)


def test_key_names_and_extra_conv_on_input_reads_the_last_backbone_level():
    fpn = FPN(in_channels=IN_CHANNELS, out_channels=16, start_level=1, add_extra_convs="on_input")
    keys = fpn.state_dict()
    assert keys["lateral_convs.0.conv.weight"].shape == (16, 16, 1, 1)  # in_channels[1] = 16
    assert keys["fpn_convs.0.conv.weight"].shape == (16, 16, 3, 3)
    assert keys["fpn_convs.3.conv.weight"].shape == (16, 64, 3, 3)  # reads in_channels[3] = 64
    assert keys["fpn_convs.4.conv.weight"].shape == (16, 16, 3, 3)
    assert fpn.fpn_convs[3].conv.stride == (2, 2)
    on_output = FPN(in_channels=IN_CHANNELS, out_channels=16, start_level=1, add_extra_convs="on_output")
    assert on_output.state_dict()["fpn_convs.3.conv.weight"].shape == (16, 16, 3, 3)


def test_true_means_on_input_as_mmdetection():
    assert FPNConfig(add_extra_convs=True).add_extra_convs == "on_input"
    assert FPN(in_channels=IN_CHANNELS, add_extra_convs=True).add_extra_convs == "on_input"
    with pytest.raises(ValidationError):
        FPNConfig(add_extra_convs="on_top")


def _identity_fpn(num_outs=2):
    """in_channels [1, 1], out 1: laterals multiply by 1, fpn convs pass the centre pixel."""
    fpn = FPN(in_channels=[1, 1], out_channels=1, num_outs=num_outs)
    for conv in [m.conv for m in fpn.lateral_convs]:
        nn.init.ones_(conv.weight)
    for conv in [m.conv for m in fpn.fpn_convs]:
        nn.init.zeros_(conv.weight)
        conv.weight.data[0, 0, 1, 1] = 1.0
    return fpn


def test_top_down_adds_the_nearest_upsampled_level_above():
    fpn = _identity_fpn()
    low = torch.zeros(1, 1, 4, 4)
    high = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    out_low, out_high = fpn([low, high])
    expected_low = torch.tensor([[[[1.0, 1.0, 2.0, 2.0],
                                   [1.0, 1.0, 2.0, 2.0],
                                   [3.0, 3.0, 4.0, 4.0],
                                   [3.0, 3.0, 4.0, 4.0]]]])
    torch.testing.assert_close(out_low, expected_low)
    torch.testing.assert_close(out_high, high)


def test_max_pool_extra_level_takes_every_other_pixel_of_the_last_output():
    fpn = _identity_fpn(num_outs=3)
    high = torch.tensor([[[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]]])
    outs = fpn([torch.zeros(1, 1, 5, 5), high])
    assert outs[0].shape[-2:] == (5, 5)  # odd sizes: upsampled to the lower level's size
    torch.testing.assert_close(outs[2], torch.tensor([[[[1.0, 3.0], [7.0, 9.0]]]]))


def test_relu_before_extra_convs_changes_only_the_later_extra_levels():
    torch.manual_seed(0)
    plain = FPN(in_channels=IN_CHANNELS, out_channels=8, num_outs=6, add_extra_convs="on_input")
    relu = FPN(in_channels=IN_CHANNELS, out_channels=8, num_outs=6, add_extra_convs="on_input",
               relu_before_extra_convs=True)
    relu.load_state_dict(plain.state_dict())
    x = _inputs()
    a, b = plain(x), relu(x)
    for i in range(5):
        torch.testing.assert_close(a[i], b[i])
    assert not torch.allclose(a[5], b[5])


def test_norm_cfg_adds_norms_and_no_norm_on_lateral_skips_them():
    gn = NormConfig(type="GN", num_groups=4)
    fpn = FPN(in_channels=IN_CHANNELS, out_channels=16, norm_cfg=gn, no_norm_on_lateral=True)
    keys = set(fpn.state_dict())
    assert "fpn_convs.0.gn.weight" in keys and "fpn_convs.0.conv.bias" not in keys
    assert "lateral_convs.0.gn.weight" not in keys and "lateral_convs.0.conv.bias" in keys


def test_configured_in_channels_must_match_the_backbone():
    """Checked once, when a detector's config resolves: the neck is connected to the backbone
    there (detcli.models.channels), and the built FPN reads the resolved value."""
    r50 = {"type": "ResNet", "depth": 50, "init_cfg": False}
    tree = {"type": "RetinaNet", "backbone": r50, "bbox_head": {"type": "RetinaHead", "num_classes": 3},
            "neck": {"type": "FPN", "in_channels": [8, 16, 32, 64], "start_level": 1,
                     "add_extra_convs": "on_input"}}
    with pytest.raises(ConfigError, match=r"model.neck.in_channels = \[8, 16, 32, 64\] disagrees "
                                          r"with \[256, 512, 1024, 2048\] derived from model.backbone"):
        validate_tree(tree, DETECTORS.config("RetinaNet"))
    tree["neck"]["in_channels"] = [256, 512, 1024, 2048]
    cfg = validate_tree(tree, DETECTORS.config("RetinaNet"))
    assert NECKS.build(cfg.neck).in_channels == [256, 512, 1024, 2048]
    cfg = FPNConfig(in_channels=[8, 16, 32, 64])
    with pytest.raises(ValueError, match=r"\[8, 16, 32, 64\] disagrees with \[256, 512, 1024, 2048\]"):
        cfg.connect([256, 512, 1024, 2048], "a ResNet-50", "model.neck")


def test_an_fpn_config_without_in_channels_cannot_be_built_alone():
    with pytest.raises(ConfigError, match="FPN needs in_channels"):
        NECKS.build(FPNConfig())


def test_level_settings_are_checked():
    with pytest.raises(ValidationError, match="num_outs 2 is less than the 4 input levels"):
        FPNConfig(in_channels=IN_CHANNELS, num_outs=2)
    with pytest.raises(ValidationError, match="num_outs 5 must equal end_level - start_level = 2"):
        FPNConfig(in_channels=IN_CHANNELS, start_level=1, end_level=3, num_outs=5)
    with pytest.raises(ValueError, match="num_outs 5 must equal end_level - start_level = 2"):
        FPNConfig(start_level=1, end_level=3, num_outs=5).connect(IN_CHANNELS, "a backbone", "neck")
    fpn = FPN(in_channels=IN_CHANNELS, out_channels=8, start_level=1, end_level=3, num_outs=2)
    assert [o.shape[-1] for o in fpn(_inputs())] == [16, 8]
    with pytest.raises(ValueError, match="FPN expects 4 feature maps"):
        fpn(_inputs()[:3])


def test_xavier_uniform_init_with_zero_bias():
    fpn = FPN(in_channels=[8], out_channels=16, num_outs=1)
    weight = fpn.lateral_convs[0].conv.weight
    bound = (6.0 / (8 + 16)) ** 0.5  # fan_in 8 * 1 * 1, fan_out 16 * 1 * 1
    assert weight.abs().max() <= bound and weight.abs().max() > 0.5 * bound
    assert torch.equal(fpn.lateral_convs[0].conv.bias, torch.zeros(16))


def test_channels_last_inputs_give_the_same_outputs():
    fpn = FPN(in_channels=IN_CHANNELS, out_channels=8, start_level=1, add_extra_convs="on_input")
    x = _inputs()
    expected = fpn(x)
    got = fpn.to(memory_format=torch.channels_last)([t.to(memory_format=torch.channels_last) for t in x])
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)
