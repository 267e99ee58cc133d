"""Assigners: which GT (or background, or neither) every prior is trained towards."""

from detcli.task.assigners.assign_result import IGNORED, NEGATIVE, AssignResult
from detcli.task.assigners.atss import ATSSAssigner, ATSSAssignerConfig, ATSSCandidates
from detcli.task.assigners.dynamic_soft_label import (
    DynamicSoftLabelAssigner,
    DynamicSoftLabelAssignerConfig,
)
from detcli.task.assigners.hungarian import (
    HungarianAssigner,
    HungarianAssignerConfig,
    HungarianMatch,
)
from detcli.task.assigners.match_costs import (
    BBoxL1Cost,
    ClassificationCost,
    FocalLossCost,
    IoUCost,
)
from detcli.task.assigners.fcos_rule import FCOSTargetAssigner, FCOSTargetsConfig, fcos_targets
from detcli.task.assigners.max_iou import MaxIoUAssigner, MaxIoUAssignerConfig

__all__ = ["BBoxL1Cost", "ClassificationCost", "FocalLossCost", "HungarianAssigner",
           "HungarianAssignerConfig", "HungarianMatch", "IoUCost", "IGNORED", "NEGATIVE", "ATSSAssigner", "ATSSAssignerConfig", "ATSSCandidates",
           "AssignResult", "DynamicSoftLabelAssigner",
           "DynamicSoftLabelAssignerConfig", "FCOSTargetAssigner", "FCOSTargetsConfig", "MaxIoUAssigner",
           "MaxIoUAssignerConfig", "fcos_targets"]
