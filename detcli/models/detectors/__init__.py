"""Detectors: the assembled models that ``build_detector`` returns."""

from detcli.models.detectors.single_stage import (
    RetinaNet,
    RetinaNetConfig,
    SingleStageDetector,
    SingleStageDetectorConfig,
)

__all__ = ["RetinaNet", "RetinaNetConfig", "SingleStageDetector", "SingleStageDetectorConfig"]
