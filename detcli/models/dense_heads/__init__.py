"""Dense heads: per-level predictions on every prior, with their targets, loss and prediction."""

from detcli.models.dense_heads.anchor_head import AnchorHead, AnchorTargets, DenseOutputs
from detcli.models.dense_heads.retina_head import RetinaHead, RetinaHeadConfig

__all__ = ["AnchorHead", "AnchorTargets", "DenseOutputs", "RetinaHead", "RetinaHeadConfig"]
