"""Detectors: the assembled models that ``build_detector`` returns."""

from detcli.models.detectors.fcos_atss import ATSS, FCOS, ATSSConfig, FCOSConfig
from detcli.models.detectors.single_stage import (
    RetinaNet,
    RetinaNetConfig,
    SingleStageDetector,
    SingleStageDetectorConfig,
)

__all__ = ["ATSS", "ATSSConfig", "FCOS", "FCOSConfig", "RetinaNet", "RetinaNetConfig",
           "SingleStageDetector", "SingleStageDetectorConfig"]
