"""Necks: tuple of backbone feature maps -> tuple of feature maps for the heads."""

from detcli.models.necks.cspnext_pafpn import CSPNeXtPAFPN, CSPNeXtPAFPNConfig
from detcli.models.necks.channel_mapper import ChannelMapper, ChannelMapperConfig
from detcli.models.necks.fpn import FPN, FPNConfig
from detcli.models.necks.pafpn import PAFPN, PAFPNConfig

__all__ = ["ChannelMapper", "ChannelMapperConfig", "CSPNeXtPAFPN", "CSPNeXtPAFPNConfig", "FPN", "FPNConfig",
           "PAFPN", "PAFPNConfig"]
