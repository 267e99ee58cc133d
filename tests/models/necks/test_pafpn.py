"""PAFPN: MMDetection 3.3's names and outputs on the same weights, the bottom-up path, channels."""

from pathlib import Path

import pytest
import torch

from detcli.models.backbones import MobileNetV2Config
from detcli.models.channels import trunk_channels
from detcli.models.necks import PAFPN, PAFPNConfig
from detcli.registry import NECKS
from tests.models.backbones.seeded import seeded_input, seeded_state

FIXTURE = torch.load(Path(__file__).parents[1] / "backbones" / "mmdet_backbones.pt",
                     weights_only=False)


def build(cfg: dict) -> PAFPN:
    values = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}
    return NECKS.build(PAFPNConfig.model_validate(values))


@pytest.mark.parametrize("name", sorted(FIXTURE["necks"]))
def test_outputs_equal_mmdetection_on_the_same_weights(name):
    entry = FIXTURE["necks"][name]
    neck = build(entry["cfg"]).eval()
    ours = {k: list(v.shape) for k, v in neck.state_dict().items()}
    assert ours == entry["shapes"]
    neck.load_state_dict(seeded_state(entry["shapes"], FIXTURE["seed"]), strict=True)
    inputs = [seeded_input((1, *size), FIXTURE["seed"] + i) for i, size in enumerate(entry["sizes"])]
    with torch.no_grad():
        outs = neck(inputs)
    assert [o.shape for o in outs] == [e.shape for e in entry["outs"]]
    for got, expected in zip(outs, entry["outs"]):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_full_size_names_equal_mmdetection():
    entry = FIXTURE["neck_names"]["pafpn_r50"]
    with torch.device("meta"):
        neck = build(entry["cfg"])
    assert {k: list(v.shape) for k, v in neck.state_dict().items()} == entry["shapes"]


def test_bottom_up_path_adds_the_downsampled_level_below():
    """Zero downsample convs make PAFPN's outputs its pafpn convs of the FPN outputs; a unit
    bias on the first one adds 1 to level 1's sum before its conv."""
    neck = PAFPN(in_channels=[4, 8], out_channels=4, num_outs=2).eval()
    for conv in neck.downsample_convs:
        torch.nn.init.zeros_(conv.conv.weight)
        torch.nn.init.zeros_(conv.conv.bias)
    pafpn = neck.pafpn_convs[0].conv
    inputs = [torch.randn(1, 4, 8, 8), torch.randn(1, 8, 4, 4)]
    with torch.no_grad():
        laterals = [neck.lateral_convs[0](inputs[0]), neck.lateral_convs[1](inputs[1])]
        laterals[0] = laterals[0] + torch.nn.functional.interpolate(laterals[1], size=(8, 8))
        p0, p1 = neck.fpn_convs[0](laterals[0]), neck.fpn_convs[1](laterals[1])
        outs = neck(inputs)
        torch.testing.assert_close(outs[0], p0)
        torch.testing.assert_close(outs[1], pafpn(p1))
        neck.downsample_convs[0].conv.bias.fill_(1.0)
        torch.testing.assert_close(neck(inputs)[1], pafpn(p1 + 1.0))


def test_in_channels_derive_from_the_backbone_config():
    cfg = PAFPNConfig(out_channels=64, num_outs=5, start_level=0, add_extra_convs="on_input")
    channels, source = trunk_channels(MobileNetV2Config(out_indices=[2, 4, 7]), cfg)
    assert cfg.in_channels == [32, 96, 1280] and channels == 64
    assert "PAFPN" in source
