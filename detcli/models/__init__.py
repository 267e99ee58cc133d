"""Models: backbones, necks, dense heads, RoI heads, losses and the detectors that assemble them.

Importing this package registers every built-in model component.
"""

from detcli.models import backbones, dense_heads, detectors, losses, necks, roi_heads  # noqa: F401

__all__ = ["backbones", "dense_heads", "detectors", "losses", "necks", "roi_heads"]
