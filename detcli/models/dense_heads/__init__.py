"""Dense heads: per-level predictions on every prior, with their targets, loss and prediction."""

from detcli.models.dense_heads.anchor_head import AnchorHead, AnchorTargets, DenseOutputs
from detcli.models.dense_heads.atss_head import ATSSHead, ATSSHeadConfig
from detcli.models.dense_heads.centerness import ScoredDenseOutputs
from detcli.models.dense_heads.fcos_head import FCOSHead, FCOSHeadConfig
from detcli.models.dense_heads.retina_head import RetinaHead, RetinaHeadConfig
from detcli.models.dense_heads.rpn_head import RPNHead, RPNHeadConfig

__all__ = ["ATSSHead", "ATSSHeadConfig", "AnchorHead", "AnchorTargets", "DenseOutputs",
           "RPNHead", "RPNHeadConfig",
           "FCOSHead", "FCOSHeadConfig", "RetinaHead", "RetinaHeadConfig", "ScoredDenseOutputs"]
