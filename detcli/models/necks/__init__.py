"""Necks: tuple of backbone feature maps -> tuple of feature maps for the heads."""

from detcli.models.necks.fpn import FPN, FPNConfig

__all__ = ["FPN", "FPNConfig"]
