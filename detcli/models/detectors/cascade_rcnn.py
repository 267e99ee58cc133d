"""Cascade R-CNN (Cai and Vasconcelos 2018): Faster R-CNN whose RoI head is a cascade of box
stages (:class:`~detcli.models.roi_heads.cascade_roi_head.CascadeRoIHead`).

The parts are Faster R-CNN's (:mod:`detcli.models.detectors.two_stage`) but for the RoI head
and ``train_cfg.rcnn``, a list with one section per stage
(:class:`~detcli.task.cascade_cfg.CascadeTrainConfig`), as long as ``roi_head.num_stages``.
The config derives the stages' channels from the neck (``CascadeRoIHeadConfig.connect``):
``roi_head.bbox_roi_extractor`` (one config, built once per stage) and every
``roi_head.bbox_head[t]``.

Training adds the stages' ``s{t}.loss_cls``, ``s{t}.loss_bbox`` and ``s{t}.acc`` to the RPN's
losses (MMDetection's keys; the trainer sums every key whose last dotted part starts with
``loss``). Inference is Faster R-CNN's with the cascade's detections.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from detcli.config.schema import Maybe
from detcli.models.detectors.two_stage import TwoStageDetector, TwoStageDetectorConfig
from detcli.models.roi_heads.cascade_roi_head import CascadeRoIHeadConfig
from detcli.registry import DETECTORS
from detcli.task.cascade_cfg import CascadeTrainConfig


class CascadeRCNNConfig(TwoStageDetectorConfig):
    type: Literal["CascadeRCNN"] = "CascadeRCNN"  # type: ignore[assignment]
    roi_head: CascadeRoIHeadConfig  # type: ignore[assignment]
    train_cfg: Maybe[CascadeTrainConfig] = Field(  # type: ignore[assignment]
        default_factory=CascadeTrainConfig)

    @model_validator(mode="after")
    def _one_train_cfg_per_stage(self) -> CascadeRCNNConfig:
        if self.train_cfg is not None and len(self.train_cfg.rcnn) != self.roi_head.num_stages:
            raise ValueError(
                f"model.train_cfg.rcnn has {len(self.train_cfg.rcnn)} sections but "
                f"model.roi_head.num_stages is {self.roi_head.num_stages}: give one "
                "[[model.train_cfg.rcnn]] (assigner, sampler) per stage")
        return self


@DETECTORS.register(CascadeRCNNConfig)
class CascadeRCNN(TwoStageDetector):
    """Cascade R-CNN with FPN: an RPNHead and a CascadeRoIHead."""

    # K is every stage's; the dataset check names the first (the config checks they agree)
    num_classes_key: ClassVar[str] = "model.roi_head.bbox_head[0].num_classes"
