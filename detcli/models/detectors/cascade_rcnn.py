"""Cascade R-CNN (Cai and Vasconcelos 2018): Faster R-CNN whose RoI head is a cascade of box
stages (:class:`~detcli.models.roi_heads.cascade_roi_head.CascadeRoIHead`), and Cascade Mask
R-CNN, the same with a mask head per stage (MMDetection 3.3 uses type ``CascadeRCNN`` for both).

The parts are Faster R-CNN's (:mod:`detcli.models.detectors.two_stage`) but for the RoI head
and ``train_cfg.rcnn``, a list with one section per stage
(:class:`~detcli.task.cascade_cfg.CascadeTrainConfig`), as long as ``roi_head.num_stages``.
The config derives the stages' channels from the neck (``CascadeRoIHeadConfig.connect``):
``roi_head.bbox_roi_extractor`` (one config, built once per stage) and every
``roi_head.bbox_head[t]`` (and the mask extractor and heads).

Training adds the stages' ``s{t}.loss_cls``, ``s{t}.loss_bbox`` and ``s{t}.acc`` (and
``s{t}.loss_mask``) to the RPN's losses (MMDetection's keys; the trainer sums every key whose
last dotted part starts with ``loss``). Inference is Faster R-CNN's with the cascade's
detections; with mask heads ``predict`` pastes their masks as Mask R-CNN's does
(:func:`~detcli.models.detectors.mask_rcnn.pasted_detections`).

With ``roi_head.mask_head`` every ``train_cfg.rcnn`` section is Mask R-CNN's (``mask_size``,
28 unless written) and so is ``test_cfg.rcnn`` (``mask_thr_binary``, 0.5); without it those
keys are refused.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from detcli.config.schema import Maybe
from detcli.models.detectors.mask_rcnn import pasted_detections
from detcli.models.detectors.two_stage import TwoStageDetector, TwoStageDetectorConfig
from detcli.models.roi_heads.cascade_roi_head import CascadeRoIHeadConfig
from detcli.registry import DETECTORS
from detcli.structures.batch import ImageBatch
from detcli.structures.detections import Detections
from detcli.task.cascade_cfg import (
    CascadeTestConfig,
    CascadeTrainConfig,
    mask_settings_without_masks,
    with_mask_settings,
)


class CascadeRCNNConfig(TwoStageDetectorConfig):
    type: Literal["CascadeRCNN"] = "CascadeRCNN"  # type: ignore[assignment]
    segments: ClassVar[bool] = True  # Cascade Mask R-CNN is a CascadeRCNN with mask heads
    roi_head: CascadeRoIHeadConfig  # type: ignore[assignment]
    train_cfg: Maybe[CascadeTrainConfig] = Field(  # type: ignore[assignment]
        default_factory=CascadeTrainConfig)
    test_cfg: CascadeTestConfig = Field(  # type: ignore[assignment]
        default_factory=CascadeTestConfig)

    @model_validator(mode="after")
    def _one_train_cfg_per_stage(self) -> CascadeRCNNConfig:
        if self.train_cfg is not None and len(self.train_cfg.rcnn) != self.roi_head.num_stages:
            raise ValueError(
                f"model.train_cfg.rcnn has {len(self.train_cfg.rcnn)} sections but "
                f"model.roi_head.num_stages is {self.roi_head.num_stages}: give one "
                "[[model.train_cfg.rcnn]] (assigner, sampler) per stage")
        return self

    @model_validator(mode="after")
    def _mask_settings(self) -> CascadeRCNNConfig:
        if self.roi_head.mask_head is not None:
            with_mask_settings(self.train_cfg, self.test_cfg)
            return self
        stray = mask_settings_without_masks(self.train_cfg, self.test_cfg)
        if stray:
            raise ValueError(
                f"{', '.join(stray)} set but model.roi_head has no mask_head: add the mask "
                "branch (model.roi_head.mask_head, as cascade_mask_rcnn_r50.toml) or remove "
                "them")
        return self


@DETECTORS.register(CascadeRCNNConfig)
class CascadeRCNN(TwoStageDetector):
    """Cascade R-CNN with FPN: an RPNHead and a CascadeRoIHead (with mask heads: Cascade Mask
    R-CNN)."""

    # K is every stage's (the config checks they agree); the dataset check names the first,
    # in the --set grammar (an array element is its index: bbox_head.0)
    num_classes_key: ClassVar[str] = "model.roi_head.bbox_head.0.num_classes"

    def predict(self, images: ImageBatch, rescale: bool = True) -> list[Detections]:
        """One :class:`Detections` per image, scores descending; with mask heads ``masks``
        (D, H, W) bool, pasted as Mask R-CNN's."""
        dets = self.predict_batch(images, rescale=rescale)
        if not self.roi_head.with_mask:
            return dets.unbind()
        return pasted_detections(dets, images, rescale, self.test_cfg.rcnn.mask_thr_binary)
