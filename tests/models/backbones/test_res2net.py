"""Res2Net: the multi-scale block's widths and hierarchy, the stage layout, config checks."""

import pytest
import torch
from pydantic import ValidationError

from detcli.errors import ConfigError
from detcli.models.backbones import Res2Net, Res2NetConfig
from detcli.models.backbones.res2net import Bottle2neck
from detcli.models.layers import NormConfig
from detcli.registry import BACKBONES


def test_widths_layout_and_outputs():
    cfg = Res2NetConfig(depth=50, base_channels=16, base_width=8, scales=4)
    model = BACKBONES.build(cfg).eval()
    first, later = model.layer2[0], model.layer2[1]
    assert first.conv1.out_channels == 4 * 16  # s * floor(32 * 8 / 16)
    assert len(first.convs) == 3 and first.convs[0].stride == (2, 2) and hasattr(first, "pool")
    assert not hasattr(later, "pool") and later.stage_type == "normal"
    assert len(model.stem) == 9 and isinstance(model.layer1[0].downsample[0], torch.nn.AvgPool2d)
    outs = model(torch.randn(1, 3, 32, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 64, 8, 16), (1, 128, 4, 8), (1, 256, 2, 4),
                                              (1, 512, 1, 2)] and cfg.out_channels() == [64, 128, 256, 512]
    assert model.layer1[0].bn3.weight.abs().min() == 1  # no zero-initialised last norm


def test_later_scales_see_the_earlier_ones():
    """Changing group 1 of conv1's output changes y_1, y_2, y_3 (normal block), but in a
    stage's first block only y_1: its scales do not add up."""
    torch.manual_seed(0)
    norm = NormConfig()
    for stage_type, changed in (("normal", [True, True, True, False]),
                                ("stage", [True, False, False, False])):
        block = Bottle2neck(32, 8, norm_cfg=norm, scales=4, base_width=8, base_channels=8,
                            stage_type=stage_type).eval()
        captured = []
        block.conv3.register_forward_hook(lambda m, inp, out: captured.append(inp[0]))
        x = torch.randn(1, 32, 6, 6)
        block.conv1.weight.data.abs_()  # positive pre-activations: ReLU passes the change
        with torch.no_grad():
            block(x)
            block.conv1.weight.data[:8] *= 2  # group 1 only
            block(x)
        before, after = captured
        diffs = [(a - b).abs().sum() > 0 for a, b in zip(before.split(8, 1), after.split(8, 1))]
        assert diffs == changed, stage_type


def test_config_checks():
    with pytest.raises(ValidationError, match="pytorch style only"):
        Res2NetConfig(style="caffe")
    with pytest.raises(ValidationError, match="50, 101 or 152"):
        Res2NetConfig(depth=18)
    with pytest.raises(ValidationError, match="greater than or equal to 2"):
        Res2NetConfig(scales=1)
    with pytest.raises(ConfigError, match="scales must be >= 2"):
        Res2Net(scales=1)
