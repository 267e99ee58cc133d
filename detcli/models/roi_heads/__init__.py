"""RoI heads of two-stage detectors: RoI feature extraction, box heads, and the RoI head that
samples proposals, computes their targets and losses, and turns them into detections."""

from detcli.models.roi_heads.bbox_head import Shared2FCBBoxHead, Shared2FCBBoxHeadConfig
from detcli.models.roi_heads.cascade_roi_head import CascadeRoIHead, CascadeRoIHeadConfig
from detcli.models.roi_heads.mask_head import FCNMaskHead, FCNMaskHeadConfig
from detcli.models.roi_heads.mask_paste import paste_detections, paste_masks
from detcli.models.roi_heads.mask_target import mask_targets
from detcli.models.roi_heads.roi_extractor import (
    RoIAlignConfig,
    SingleRoIExtractor,
    SingleRoIExtractorConfig,
    map_roi_levels,
)
from detcli.models.roi_heads.rois import RoISamples, batch_rois
from detcli.models.roi_heads.standard_roi_head import StandardRoIHead, StandardRoIHeadConfig

__all__ = [
    "CascadeRoIHead", "CascadeRoIHeadConfig",
    "FCNMaskHead", "FCNMaskHeadConfig", "mask_targets", "paste_detections", "paste_masks",
    "RoIAlignConfig", "RoISamples", "Shared2FCBBoxHead", "Shared2FCBBoxHeadConfig",
    "SingleRoIExtractor", "SingleRoIExtractorConfig", "StandardRoIHead", "StandardRoIHeadConfig",
    "batch_rois", "map_roi_levels",
]
