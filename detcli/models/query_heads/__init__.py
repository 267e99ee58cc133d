"""Query-based heads: a fixed set of learned queries, each predicting one object (DETR)."""

from detcli.models.query_heads.detr_head import (
    DETRHead,
    DETRHeadConfig,
    DETRTestConfig,
    DETRTrainConfig,
)

__all__ = ["DETRHead", "DETRHeadConfig", "DETRTestConfig", "DETRTrainConfig"]
