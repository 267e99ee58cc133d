"""Box coders: how regression targets are encoded from, and predictions decoded to, boxes."""

from detcli.task.coders.delta_xywh import DeltaXYWHBBoxCoder, DeltaXYWHBBoxCoderConfig
from detcli.task.coders.distance_point import (
    DistancePointBBoxCoder,
    DistancePointBBoxCoderConfig,
)

__all__ = ["DeltaXYWHBBoxCoder", "DeltaXYWHBBoxCoderConfig", "DistancePointBBoxCoder",
           "DistancePointBBoxCoderConfig"]
