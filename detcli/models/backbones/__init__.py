"""Backbones: image batch (N, 3, H, W) -> tuple of feature maps, one per selected stage."""

from detcli.models.backbones.convnext import ConvNeXt, ConvNeXtConfig
from detcli.models.backbones.cspnext import CSPNeXt, CSPNeXtConfig
from detcli.models.backbones.mobilenet_v2 import MobileNetV2, MobileNetV2Config
from detcli.models.backbones.mobilenet_v3 import MobileNetV3, MobileNetV3Config
from detcli.models.backbones.regnet import RegNet, RegNetConfig
from detcli.models.backbones.res2net import Res2Net, Res2NetConfig
from detcli.models.backbones.resnet import ResNet, ResNetConfig, ResNetV1d, ResNetV1dConfig
from detcli.models.backbones.resnext import ResNeXt, ResNeXtConfig
from detcli.models.backbones.swin import SwinTransformer, SwinTransformerConfig

__all__ = ["ConvNeXt", "ConvNeXtConfig", "CSPNeXt", "CSPNeXtConfig", "MobileNetV2", "MobileNetV2Config", "MobileNetV3",
           "MobileNetV3Config", "RegNet", "RegNetConfig",
           "Res2Net", "Res2NetConfig", "ResNeXt", "ResNeXtConfig", "ResNet", "ResNetConfig",
           "ResNetV1d", "ResNetV1dConfig", "SwinTransformer", "SwinTransformerConfig"]
