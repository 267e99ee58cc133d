"""Losses with MMDetection 2.x semantics for weight, reduction, avg_factor and loss_weight."""

from detcli.models.losses.cross_entropy_loss import CrossEntropyLoss, CrossEntropyLossConfig
from detcli.models.losses.focal_loss import FocalLoss, FocalLossConfig
from detcli.models.losses.gfocal_loss import (
    DistributionFocalLoss,
    DistributionFocalLossConfig,
    QualityFocalLoss,
    QualityFocalLossConfig,
)
from detcli.models.losses.iou_loss import IoULoss, IoULossConfig
from detcli.models.losses.regression_losses import (
    GIoULoss,
    GIoULossConfig,
    L1Loss,
    L1LossConfig,
    SmoothL1Loss,
    SmoothL1LossConfig,
)
from detcli.models.losses.utils import WeightedLoss, weight_reduce_loss

__all__ = [
    "CrossEntropyLoss", "CrossEntropyLossConfig", "DistributionFocalLoss",
    "DistributionFocalLossConfig", "FocalLoss", "FocalLossConfig", "GIoULoss",
    "GIoULossConfig", "IoULoss", "IoULossConfig", "L1Loss", "L1LossConfig", "QualityFocalLoss",
    "QualityFocalLossConfig", "SmoothL1Loss", "SmoothL1LossConfig", "WeightedLoss",
    "weight_reduce_loss",
]
