"""MobileNetV3: torchvision's trunk and names (its weights load as they are, same features),
the outputs at strides 8/16/32, freezing and norm_eval, config checks."""

import pytest
import torch
import torchvision
from pydantic import ValidationError

from detcli.models.backbones import MobileNetV3, MobileNetV3Config
from detcli.models.pretrained import PretrainedInit, torchvision_url
from detcli.registry import BACKBONES
from tests.models.backbones.test_light_backbones import randomise_norms


@pytest.mark.parametrize("arch, features, channels", [
    ("large", [1, 3, 6, 12, 16], [16, 24, 40, 112, 960]),
    ("small", [0, 1, 3, 8, 12], [16, 16, 24, 48, 576]),
])
def test_equals_torchvision_on_its_weights_at_every_stride(tmp_path, arch, features, channels):
    tv = randomise_norms(getattr(torchvision.models, f"mobilenet_v3_{arch}")())
    path = tmp_path / f"mobilenet_v3_{arch}.pth"
    torch.save(tv.state_dict(), path)  # with the classifier, as torchvision's file
    cfg = MobileNetV3Config(arch=arch, out_indices=[0, 1, 2, 3, 4],
                            init_cfg=PretrainedInit(checkpoint=str(path)))
    model = BACKBONES.build(cfg)
    model.init_weights()  # no conversion: torchvision's names
    model.eval()
    assert model.output_features == features and cfg.out_channels() == channels
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected, t = [], x
        for k, layer in enumerate(tv.features):
            t = layer(t)
            if k in features:
                expected.append(t)
        outs = model(x)
    for i, (got, want) in enumerate(zip(outs, expected)):
        assert got.shape[-2:] == (64 // 2 ** (i + 1), 96 // 2 ** (i + 1))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert set(model.state_dict()) == {k for k in tv.state_dict() if k.startswith("features.")}


def test_default_outputs_strides_and_width():
    cfg = MobileNetV3Config()
    assert cfg.out_channels() == [40, 112, 960] and cfg.label() == "MobileNetV3-Large"
    model = BACKBONES.build(cfg).eval()
    outs = model(torch.randn(2, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(2, 40, 8, 8), (2, 112, 4, 4), (2, 960, 2, 2)]
    # torchvision's width_mult: 40 * 0.5 = 20 -> 24 (multiples of 8), 112 -> 56, 160 * 6 -> 480
    assert MobileNetV3Config(widen_factor=0.5).out_channels() == [24, 56, 480]
    assert BACKBONES.build(cfg).features[1].block[0][1].eps == 0.001  # torchvision's BN


def test_frozen_stages_and_norm_eval():
    model = MobileNetV3(arch="small", frozen_stages=3, norm_eval=True)
    model.train()
    sum(o.sum() for o in model(torch.randn(2, 3, 64, 64))).backward()
    for name, param in model.named_parameters():
        frozen = int(name.split(".")[1]) <= 3  # the stem to output 2 (feature 3, stride 8)
        assert (param.grad is None) is frozen, name
    assert not any(m.training for m in model.modules()
                   if isinstance(m, torch.nn.BatchNorm2d))
    assert model.features[4].training  # not frozen: only its BNs are in eval mode


def test_config_checks():
    with pytest.raises(ValidationError, match=r"out_indices \[5\]"):
        MobileNetV3Config(out_indices=[5])
    with pytest.raises(ValidationError, match="not 'GN'"):
        MobileNetV3Config(norm_cfg={"type": "GN", "num_groups": 8})
    assert torchvision_url("mobilenet_v3_large").endswith("mobilenet_v3_large-8738ca79.pth")
