"""Pure tensor functions: box geometry and NMS. No config, no nn.Module."""

from detcli.ops.boxes import (
    aligned_box_iou,
    aligned_giou,
    box_area,
    box_iou,
    clip_boxes,
    cxcywh_to_xyxy,
    scale_boxes,
    xyxy_to_cxcywh,
)
from detcli.ops.nms import batched_nms, batched_soft_nms

__all__ = [
    "aligned_box_iou", "aligned_giou", "box_area", "box_iou", "clip_boxes", "cxcywh_to_xyxy",
    "scale_boxes", "xyxy_to_cxcywh", "batched_nms", "batched_soft_nms",
]
