"""Detectors: the assembled models that ``build_detector`` returns."""

from detcli.models.detectors.cascade_rcnn import CascadeRCNN, CascadeRCNNConfig
from detcli.models.detectors.deformable_detr import DeformableDETR, DeformableDETRConfig
from detcli.models.detectors.detr import DETR, DETRConfig
from detcli.models.detectors.dino import DINO, DINOConfig
from detcli.models.detectors.fcos_atss import ATSS, FCOS, ATSSConfig, FCOSConfig
from detcli.models.detectors.mask_rcnn import MaskRCNN, MaskRCNNConfig
from detcli.models.detectors.rtmdet import RTMDet, RTMDetConfig
from detcli.models.detectors.single_stage import (
    RetinaNet,
    RetinaNetConfig,
    SingleStageDetector,
    SingleStageDetectorConfig,
)
from detcli.models.detectors.two_stage import (
    FasterRCNN,
    FasterRCNNConfig,
    TwoStageDetector,
    TwoStageDetectorConfig,
)

__all__ = ["DETR", "DETRConfig", "DINO", "DINOConfig", "DeformableDETR", "DeformableDETRConfig", "ATSS", "ATSSConfig", "CascadeRCNN", "CascadeRCNNConfig", "FCOS", "FCOSConfig", "FasterRCNN", "FasterRCNNConfig",
           "MaskRCNN", "MaskRCNNConfig",
           "RTMDet", "RTMDetConfig", "RetinaNet", "RetinaNetConfig", "SingleStageDetector", "SingleStageDetectorConfig",
           "TwoStageDetector", "TwoStageDetectorConfig"]
