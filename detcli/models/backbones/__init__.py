"""Backbones: image batch (N, 3, H, W) -> tuple of feature maps, one per selected stage."""

from detcli.models.backbones.cspnext import CSPNeXt, CSPNeXtConfig
from detcli.models.backbones.resnet import ResNet, ResNetConfig, ResNetV1d, ResNetV1dConfig
from detcli.models.backbones.resnext import ResNeXt, ResNeXtConfig

__all__ = ["CSPNeXt", "CSPNeXtConfig", "ResNeXt", "ResNeXtConfig", "ResNet", "ResNetConfig",
           "ResNetV1d", "ResNetV1dConfig"]
