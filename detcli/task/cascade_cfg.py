"""Training settings of Cascade R-CNN: Faster R-CNN's ``train_cfg`` with one ``rcnn`` section
per RoI stage (MMDetection 3.3's ``_base_/models/cascade-rcnn_r50_fpn.py``: the stages'
assigners ask IoU >= 0.5, 0.6 and 0.7 of a positive).

As TOML (the RPN sections as Faster R-CNN's, :mod:`detcli.task.two_stage_cfg`)::

    [[model.train_cfg.rcnn]]          # stage 0: the RPN's proposals
    assigner = { type = "MaxIoUAssigner", pos_iou_thr = 0.5, neg_iou_thr = 0.5, min_pos_iou = 0.5,
                 match_low_quality = false }
    sampler = { type = "RandomSampler", num = 512, pos_fraction = 0.25, add_gt_as_proposals = true }

    [[model.train_cfg.rcnn]]          # stage 1: stage 0's refined boxes, IoU 0.6
    ...

    [[model.train_cfg.rcnn]]          # stage 2: stage 1's refined boxes, IoU 0.7
    ...

The list's length must equal ``model.roi_head.num_stages`` (checked by the detector's config).
"""

from __future__ import annotations

from pydantic import Field

from detcli.config.schema import Schema
from detcli.task.assigners.max_iou import MaxIoUAssignerConfig
from detcli.task.samplers.random_sampler import RandomSamplerConfig
from detcli.task.train_cfg import DenseTrainConfig
from detcli.task.two_stage_cfg import (
    ProposalConfig,
    RCNNTrainConfig,
    rpn_train_config,
)

STAGE_IOUS = (0.5, 0.6, 0.7)  # MMDetection's Cascade R-CNN: each stage's positive IoU


def cascade_stage(iou: float) -> RCNNTrainConfig:
    """One stage's sampling: positive at IoU >= ``iou`` (negative below it, no low-quality
    matches), 512 RoIs per image, a quarter positive at most, GT boxes added as proposals."""
    return RCNNTrainConfig(
        assigner=MaxIoUAssignerConfig(pos_iou_thr=iou, neg_iou_thr=iou, min_pos_iou=iou,
                                      match_low_quality=False, ignore_iof_thr=-1),
        sampler=RandomSamplerConfig(num=512, pos_fraction=0.25, neg_pos_ub=-1,
                                    add_gt_as_proposals=True),
        pos_weight=-1, debug=False)


def cascade_stages() -> list[RCNNTrainConfig]:
    return [cascade_stage(iou) for iou in STAGE_IOUS]


def cascade_rpn() -> DenseTrainConfig:
    """Cascade R-CNN's RPN targets: Faster R-CNN's, but anchors crossing the image border are
    dropped (``allowed_border = 0``)."""
    return rpn_train_config().model_copy(update={"allowed_border": 0})


def cascade_proposals() -> ProposalConfig:
    """Training proposals: the 2000 best of each image (Faster R-CNN keeps 1000)."""
    return ProposalConfig(nms_pre=2000, max_per_img=2000)


class CascadeTrainConfig(Schema):
    rpn: DenseTrainConfig = Field(default_factory=cascade_rpn)
    rpn_proposal: ProposalConfig = Field(default_factory=cascade_proposals)
    rcnn: list[RCNNTrainConfig] = Field(default_factory=cascade_stages, min_length=1)
