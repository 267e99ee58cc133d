"""Training and test settings of two-stage detectors: MMDetection 2.x's ``train_cfg`` and
``test_cfg`` of Faster R-CNN, with its defaults (``_base_/models/faster_rcnn_r50_fpn.py``).

As TOML::

    [model.train_cfg.rpn]            # the RPN's anchor targets (a dense head's train_cfg)
    allowed_border = -1
    assigner = { type = "MaxIoUAssigner", pos_iou_thr = 0.7, neg_iou_thr = 0.3, min_pos_iou = 0.3 }
    sampler = { type = "RandomSampler", num = 256, pos_fraction = 0.5, add_gt_as_proposals = false }

    [model.train_cfg.rpn_proposal]   # proposals the RoI head trains on
    nms_pre = 2000
    max_per_img = 1000
    nms = { type = "nms", iou_threshold = 0.7 }

    [model.train_cfg.rcnn]           # which proposals the RoI head learns from
    mask_size = 28                   # Mask R-CNN only: the side of the mask targets
    assigner = { type = "MaxIoUAssigner", pos_iou_thr = 0.5, neg_iou_thr = 0.5, min_pos_iou = 0.5,
                 match_low_quality = false }
    sampler = { type = "RandomSampler", num = 512, pos_fraction = 0.25, add_gt_as_proposals = true }

    [model.test_cfg.rpn]             # proposals at test time
    nms_pre = 1000
    max_per_img = 1000

    [model.test_cfg.rcnn]            # the final detections
    mask_thr_binary = 0.5            # Mask R-CNN only: a pasted mask's foreground threshold
    score_thr = 0.05
    nms = { type = "nms", iou_threshold = 0.5 }
    max_per_img = 100
"""

from __future__ import annotations

from pydantic import Field

from detcli.config.schema import Schema
from detcli.registry import AssignerConfig, SamplerConfig
from detcli.task.assigners.max_iou import MaxIoUAssignerConfig
from detcli.task.postprocess import NMSConfig, NMSSettings, UnitFloat
from detcli.task.samplers.random_sampler import RandomSamplerConfig
from detcli.task.train_cfg import DenseTrainConfig


def rpn_train_config() -> DenseTrainConfig:
    """The RPN's anchor targets: IoU >= 0.7 positive, < 0.3 negative, each GT claims its best
    anchors down to 0.3; 256 anchors per image sampled, half positive at most."""
    return DenseTrainConfig(
        assigner=MaxIoUAssignerConfig(pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3,
                                      match_low_quality=True, ignore_iof_thr=-1),
        sampler=RandomSamplerConfig(num=256, pos_fraction=0.5, neg_pos_ub=-1,
                                    add_gt_as_proposals=False),
        allowed_border=-1, pos_weight=-1, debug=False)


def rpn_nms() -> NMSConfig:
    return NMSConfig(iou_threshold=0.7)


class ProposalConfig(Schema):
    """How the RPN turns its outputs into proposals (``train_cfg.rpn_proposal``,
    ``test_cfg.rpn``): per level the ``nms_pre`` best anchors by objectness, decoded and
    clipped; boxes with a side <= ``min_bbox_size`` dropped; NMS within each level of each
    image; the ``max_per_img`` best of each image kept."""

    nms_pre: int = Field(1000, ge=-1)  # -1: every anchor of the level
    max_per_img: int = Field(1000, gt=0)
    nms: NMSConfig = Field(default_factory=rpn_nms)
    min_bbox_size: float = Field(0, ge=0)


def rcnn_assigner() -> MaxIoUAssignerConfig:
    return MaxIoUAssignerConfig(pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5,
                                match_low_quality=False, ignore_iof_thr=-1)


def rcnn_sampler() -> RandomSamplerConfig:
    return RandomSamplerConfig(num=512, pos_fraction=0.25, neg_pos_ub=-1,
                               add_gt_as_proposals=True)


class RCNNTrainConfig(Schema):
    """Which proposals (and GT boxes, ``add_gt_as_proposals``) the RoI head learns from."""

    assigner: AssignerConfig = Field(default_factory=rcnn_assigner)
    sampler: SamplerConfig = Field(default_factory=rcnn_sampler)
    pos_weight: float = -1.0  # weight of positives in the classification loss; <= 0 means 1
    debug: bool = False


class RCNNTestConfig(Schema):
    """The RoI head's post-processing: per-class scores above ``score_thr``, NMS per class,
    the ``max_per_img`` best of each image."""

    score_thr: UnitFloat = 0.05
    nms: NMSSettings = Field(default_factory=NMSConfig)
    max_per_img: int = Field(100, gt=0)
    min_bbox_size: float = Field(0, ge=0)  # det: drop boxes with a side <= this (0: empty ones)


def train_proposals() -> ProposalConfig:
    return ProposalConfig(nms_pre=2000, max_per_img=1000)


class TwoStageTrainConfig(Schema):
    rpn: DenseTrainConfig = Field(default_factory=rpn_train_config)
    rpn_proposal: ProposalConfig = Field(default_factory=train_proposals)
    rcnn: RCNNTrainConfig = Field(default_factory=RCNNTrainConfig)


class TwoStageTestConfig(Schema):
    rpn: ProposalConfig = Field(default_factory=ProposalConfig)
    rcnn: RCNNTestConfig = Field(default_factory=RCNNTestConfig)


class RCNNMaskTrainConfig(RCNNTrainConfig):
    """Mask R-CNN's ``train_cfg.rcnn``: Faster R-CNN's, plus the size of the mask targets."""

    mask_size: int = Field(28, ge=1)  # h = w of the targets: the mask head's output size


class RCNNMaskTestConfig(RCNNTestConfig):
    """Mask R-CNN's ``test_cfg.rcnn``: Faster R-CNN's, plus where a pasted mask probability
    counts as foreground."""

    mask_thr_binary: UnitFloat = 0.5


class MaskRCNNTrainConfig(TwoStageTrainConfig):
    rcnn: RCNNMaskTrainConfig = Field(  # type: ignore[assignment]
        default_factory=RCNNMaskTrainConfig)


class MaskRCNNTestConfig(TwoStageTestConfig):
    rcnn: RCNNMaskTestConfig = Field(  # type: ignore[assignment]
        default_factory=RCNNMaskTestConfig)
