"""Prior generators: where the dense head's anchors (or points) sit on each feature level."""

from detcli.task.prior_generators.anchor_generator import (
    AnchorGenerator,
    AnchorGeneratorConfig,
    anchor_inside_flags,
)
from detcli.task.prior_generators.point_generator import (
    MlvlPointGenerator,
    MlvlPointGeneratorConfig,
)

__all__ = ["AnchorGenerator", "AnchorGeneratorConfig", "MlvlPointGenerator",
           "MlvlPointGeneratorConfig", "anchor_inside_flags"]
