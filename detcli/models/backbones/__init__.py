"""Backbones: image batch (N, 3, H, W) -> tuple of feature maps, one per selected stage."""

from detcli.models.backbones.cspnext import CSPNeXt, CSPNeXtConfig
from detcli.models.backbones.resnet import ResNet, ResNetConfig

__all__ = ["CSPNeXt", "CSPNeXtConfig", "ResNet", "ResNetConfig"]
