"""Prior generators: where the dense head's anchors (or points) sit on each feature level."""

from detcli.task.prior_generators.anchor_generator import (
    AnchorGenerator,
    AnchorGeneratorConfig,
    anchor_inside_flags,
)

__all__ = ["AnchorGenerator", "AnchorGeneratorConfig", "anchor_inside_flags"]
