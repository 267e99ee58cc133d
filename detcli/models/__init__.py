"""Models: backbones, necks, dense heads, losses and the detectors that assemble them.

Importing this package registers every built-in model component.
"""

from detcli.models import backbones, dense_heads, detectors, losses, necks  # noqa: F401

__all__ = ["backbones", "dense_heads", "detectors", "losses", "necks"]
