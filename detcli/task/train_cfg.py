"""Training settings of dense (one-stage) heads: MMDetection 2.x's ``train_cfg`` of a dense head.

RetinaNet's, as TOML::

    [model.bbox_head.train_cfg]
    assigner = { type = "MaxIoUAssigner", pos_iou_thr = 0.5, neg_iou_thr = 0.4, min_pos_iou = 0 }
    sampler = { type = "PseudoSampler" }
    allowed_border = -1
    pos_weight = -1
    debug = false
"""

from __future__ import annotations

from pydantic import Field

from detcli.config.schema import Schema
from detcli.registry import AssignerConfig, SamplerConfig
from detcli.task.assigners.max_iou import MaxIoUAssignerConfig
from detcli.task.samplers.pseudo_sampler import PseudoSamplerConfig


def retinanet_assigner() -> MaxIoUAssignerConfig:
    return MaxIoUAssignerConfig(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0)


class DenseTrainConfig(Schema):
    assigner: AssignerConfig = Field(default_factory=retinanet_assigner)
    sampler: SamplerConfig = Field(default_factory=PseudoSamplerConfig)
    # Priors further than this many pixels outside the image take no part in assignment;
    # -1 keeps every prior on a valid location (see anchor_inside_flags).
    allowed_border: int = Field(-1, ge=-1)
    # Weight of positive samples in the classification loss; <= 0 means 1.
    pos_weight: float = -1.0
    debug: bool = False
