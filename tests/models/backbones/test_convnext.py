"""ConvNeXt: stage shapes, torchvision's weights converted (same features), freezing, checks."""

import pytest
import torch
import torchvision
from pydantic import ValidationError

from detcli.models.backbones import ConvNeXt, ConvNeXtConfig
from detcli.models.backbones.convnext import ConvNeXtArch, convnext_from_torchvision
from detcli.models.pretrained import PretrainedInit, torchvision_url
from detcli.registry import BACKBONES


def test_outputs_strides_and_names():
    cfg = ConvNeXtConfig(arch={"depths": [1, 1, 2, 1], "channels": [8, 16, 32, 64]},
                         out_indices=[1, 3])
    model = BACKBONES.build(cfg).eval()
    outs = model(torch.randn(2, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(2, 16, 8, 12), (2, 64, 2, 3)]
    assert cfg.out_channels() == [16, 64] == model.out_channels
    keys = set(model.state_dict())
    assert {"downsample_layers.0.0.weight", "downsample_layers.1.1.weight", "norm1.weight",
            "stages.2.1.pointwise_conv2.weight", "stages.0.0.gamma"} <= keys
    assert "norm0.weight" not in keys  # only the outputs get a norm
    assert ConvNeXtConfig().out_channels() == [96, 192, 384, 768]


def test_equals_torchvision_convnext_tiny_on_its_converted_weights(tmp_path):
    torch.manual_seed(0)
    tv = torchvision.models.convnext_tiny().eval()
    for name, param in tv.named_parameters():
        if name.endswith("layer_scale"):  # 1e-6 at init: make every block's branch count
            param.data.uniform_(0.5, 1.5)
    path = tmp_path / "convnext_tiny.pth"
    torch.save(tv.state_dict(), path)
    model = ConvNeXt(init_cfg=PretrainedInit(checkpoint=str(path)))
    model.init_weights()  # converted on load; norm0..3 keep weight 1, bias 0
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats, t = [], x
        for i, layer in enumerate(tv.features):
            t = layer(t)
            if i % 2 == 1:
                feats.append(t)
        outs = model(x)
    for i, (got, stage) in enumerate(zip(outs, feats)):
        expected = torch.nn.functional.layer_norm(stage.permute(0, 2, 3, 1), (stage.shape[1],),
                                                  eps=1e-6).permute(0, 3, 1, 2)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert set(convnext_from_torchvision(tv.state_dict())) == set(model.state_dict()) - {
        f"norm{i}.{p}" for i in range(4) for p in ("weight", "bias")}
    assert torchvision_url("convnext_tiny").endswith("convnext_tiny-983f1562.pth")


def test_frozen_stages_and_drop_path():
    model = ConvNeXt(arch=ConvNeXtArch(depths=[1, 1, 1, 1], channels=[8, 16, 32, 64]),
                     frozen_stages=2, drop_path_rate=0.5)
    model.train()
    sum(o.sum() for o in model(torch.randn(2, 3, 64, 64))).backward()
    for name, param in model.named_parameters():
        frozen = name.startswith(("downsample_layers.0.", "downsample_layers.1.", "stages.0.",
                                  "stages.1."))
        assert (param.grad is None) is frozen, name
    assert model.stages[3][0].drop_path == 0.5 and model.stages[0][0].drop_path == 0.0
    with pytest.raises(ValidationError, match="out_indices"):
        ConvNeXtConfig(out_indices=[4])
