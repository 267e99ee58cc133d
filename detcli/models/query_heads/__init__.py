"""Query-based heads: a fixed set of learned queries, each predicting one object (DETR,
Deformable DETR)."""

from detcli.models.query_heads.deformable_detr_head import (
    DeformableDETRHead,
    DeformableDETRHeadConfig,
)
from detcli.models.query_heads.detr_head import (
    DETRHead,
    DETRHeadConfig,
    DETRTestConfig,
    DETRTrainConfig,
)
from detcli.models.query_heads.dino_head import DINOHead, DINOHeadConfig

__all__ = ["DeformableDETRHead", "DeformableDETRHeadConfig", "DETRHead", "DETRHeadConfig", "DETRTestConfig", "DETRTrainConfig", "DINOHead", "DINOHeadConfig"]
