"""Which ImageNet checkpoints each backbone config says it can load (``weights()``, listed by
``det presets`` and ``det config schema``), and that every torchvision one it names really
fits: torchvision's model, built on the meta device, loads into det's through the backbone's
own ``init_weights`` (conversion included) with no shape error and nothing missing beyond the
keys torchvision's file does not have."""

import logging

import pytest
import torch
import torchvision

from detcli.models import pretrained
from detcli.models.backbones import (
    ConvNeXtConfig,
    CSPNeXtConfig,
    MobileNetV2Config,
    MobileNetV3Config,
    RegNetConfig,
    Res2NetConfig,
    ResNetConfig,
    ResNeXtConfig,
    SwinTransformerConfig,
)
from detcli.models.pretrained import PretrainedInit
from detcli.registry import BACKBONES

SWIN_T_ORIGINAL = ("https://github.com/SwinTransformer/storage/releases/download/v1.0.0/"
                   "swin_tiny_patch4_window7_224.pth")


def test_weights_follow_the_design():
    assert ResNetConfig(depth=101).weights() == ["torchvision://resnet101"]
    assert ResNetConfig(style="caffe").weights() == ["open-mmlab://detectron/resnet50_caffe",
                                                     "open-mmlab://detectron2/resnet50_caffe"]
    assert ResNetConfig(depth=18, base_channels=16).weights() == []  # other widths: none
    assert ResNetConfig(deep_stem=True).weights() == [] == Res2NetConfig().weights()
    assert ResNeXtConfig(depth=101, groups=64, base_width=4).weights() == [
        "torchvision://resnext101_64x4d", "open-mmlab://resnext101_64x4d"]
    assert ResNeXtConfig(groups=8, base_width=4).weights() == []
    assert RegNetConfig(arch="regnetx_400mf").weights() == []  # torchvision's is 400 wide
    assert MobileNetV2Config(widen_factor=0.5).weights() == []
    assert SwinTransformerConfig(convert_weights=True).weights() == ["torchvision://swin_t",
                                                                     SWIN_T_ORIGINAL]
    assert SwinTransformerConfig(window_size=12).weights() == []
    assert SwinTransformerConfig(depths=[2, 2, 18, 2]).label() == "Swin-S"
    assert MobileNetV3Config(arch="small").weights() == ["torchvision://mobilenet_v3_small"]
    assert CSPNeXtConfig(deepen_factor=0.33, widen_factor=0.5).weights()[0].endswith(
        "cspnext-s_imagenet_600e.pth")


# configs whose torchvision weights are loaded below; (config, keys det has that the file lacks)
CASES = {
    "resnet50": (ResNetConfig(), ()),
    "resnext101_32x8d": (ResNeXtConfig(depth=101, groups=32, base_width=8), ()),
    "regnet_x_800mf": (RegNetConfig(arch="regnetx_800mf"), ()),
    "mobilenet_v2": (MobileNetV2Config(), ()),
    "mobilenet_v3_large": (MobileNetV3Config(out_indices=[0, 1, 2, 3, 4]), ()),
    "mobilenet_v3_small": (MobileNetV3Config(arch="small"), ()),
    "convnext_tiny": (ConvNeXtConfig(), ("norm",)),
    "swin_t": (SwinTransformerConfig(), ("norm",)),
    "swin_b": (SwinTransformerConfig(embed_dims=128, depths=[2, 2, 18, 2],
                                     num_heads=[4, 8, 16, 32]), ("norm",)),
}


BUILT_ON_CPU = {"regnet_x_800mf"}  # torchvision's RegNet reads tensor values while building


@pytest.mark.filterwarnings("ignore:for .* copying from a non-meta parameter")
@pytest.mark.parametrize("name", sorted(CASES))
def test_every_listed_torchvision_file_fits(name, monkeypatch, caplog):
    cfg, lacking = CASES[name]
    checkpoint = f"torchvision://{name}"
    assert checkpoint in cfg.weights()
    with torch.device("cpu" if name in BUILT_ON_CPU else "meta"):
        state = torchvision.models.get_model(name).state_dict()
    with torch.device("meta"):
        model = BACKBONES.build(cfg.model_copy(update={
            "init_cfg": PretrainedInit(checkpoint=checkpoint)}))
    monkeypatch.setattr(pretrained, "_read_url", lambda url: dict(state))  # no download
    with caplog.at_level(logging.WARNING, logger="detcli.models.pretrained"):
        model.init_weights()  # converted as on a real load; a shape mismatch raises
    missing = [r.getMessage() for r in caplog.records if "lacks" in r.getMessage()]
    if not lacking:
        assert missing == []
    else:  # only the output norms (norm0 ... norm3), which torchvision's file has none of
        keys = missing[0].split(": ", 1)[1].split(", ")
        assert all(k.split(".")[0].rstrip("0123456789") in lacking for k in keys), keys
