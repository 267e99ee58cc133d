"""Box coders: how regression targets are encoded from, and predictions decoded to, boxes."""

from detcli.task.coders.delta_xywh import DeltaXYWHBBoxCoder, DeltaXYWHBBoxCoderConfig

__all__ = ["DeltaXYWHBBoxCoder", "DeltaXYWHBBoxCoderConfig"]
