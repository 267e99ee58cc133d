"""Models: backbones, necks, dense heads, query heads and transformer blocks, RoI heads,
losses and the detectors that assemble them.

Importing this package registers every built-in model component.
"""

from detcli.models import (  # noqa: F401
    backbones,
    dense_heads,
    detectors,
    losses,
    necks,
    query_heads,
    roi_heads,
    transformer,
)

__all__ = ["backbones", "dense_heads", "detectors", "losses", "necks", "query_heads",
           "roi_heads", "transformer"]
