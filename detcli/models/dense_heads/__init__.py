"""Dense heads: per-level predictions on every prior, with their targets, loss and prediction.

Each is a :class:`detcli.models.protocols.DenseHead`; ``forward`` returns
:class:`~detcli.structures.dense.DenseOutputs`.
"""

from detcli.models.dense_heads.anchor_head import AnchorHead, AnchorTargets
from detcli.models.dense_heads.atss_head import ATSSHead, ATSSHeadConfig
from detcli.models.dense_heads.fcos_head import FCOSHead, FCOSHeadConfig
from detcli.models.dense_heads.retina_head import RetinaHead, RetinaHeadConfig
from detcli.models.dense_heads.rtmdet_head import RTMDetSepBNHead, RTMDetSepBNHeadConfig
from detcli.models.dense_heads.rpn_head import RPNHead, RPNHeadConfig
from detcli.structures.dense import Candidates, DenseOutputs

__all__ = ["ATSSHead", "ATSSHeadConfig", "AnchorHead", "AnchorTargets", "Candidates",
           "DenseOutputs", "RPNHead", "RPNHeadConfig", "RTMDetSepBNHead", "RTMDetSepBNHeadConfig",
           "FCOSHead", "FCOSHeadConfig", "RetinaHead", "RetinaHeadConfig"]
