"""Two-stage detectors: backbone -> neck -> RPN (proposals) -> RoI head (Faster R-CNN).

N images, H x W the padded network input, L feature levels, P proposal slots per image
(``max_per_img`` of the proposal config), K classes, M ``test_cfg.rcnn.max_per_img``.

Training (``loss``): the RPN's anchor targets and losses (``loss_rpn_cls``, ``loss_rpn_bbox``,
with ``train_cfg.rpn``); proposals from the RPN's detached outputs (``train_cfg.rpn_proposal``);
the RoI head samples them (``train_cfg.rcnn``: assigner, sampler, GT added as proposals),
pools their features and adds ``loss_cls``, ``loss_bbox`` and ``acc``. Inference
(``predict_batch``): proposals with ``test_cfg.rpn``, the RoI head's detections with
``test_cfg.rcnn``.

The config derives the channels that connect the parts (:mod:`detcli.models.channels`), so a
TOML file never repeats them:
``neck.in_channels`` from the backbone's outputs; ``rpn_head.in_channels``,
``roi_head.bbox_roi_extractor.out_channels`` and ``roi_head.bbox_head.in_channels`` from the
neck's ``out_channels``. A value written anyway must agree, or validation fails naming both.
Attribute names ``backbone``, ``neck``, ``rpn_head`` and ``roi_head`` give MMDetection's
state-dict layout, so its checkpoints load without key mapping.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, NamedTuple

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from detcli.config.schema import Maybe, Schema
from detcli.errors import ConfigError
from detcli.models.channels import (
    BackboneSchema,
    NeckSchema,
    RoIHeadSchema,
    connect_head,
    trunk_channels,
)
from detcli.models.detectors.single_stage import TrunkDetector, build_trunk
from detcli.models.protocols import DenseStageConfig, DetectorStages
from detcli.registry import BACKBONES, DETECTORS, HEADS, NECKS, ROI_HEADS, HeadConfig
from detcli.structures.batch import DetTargets, ImageBatch
from detcli.structures.dense import Candidates, DenseOutputs, detections_as_candidates
from detcli.structures.detections import DetectionBatch
from detcli.structures.proposals import Proposals
from detcli.task.two_stage_cfg import TwoStageTestConfig, TwoStageTrainConfig


class TwoStageOutputs(NamedTuple):
    """What ``forward`` computes without proposals: the features and the RPN's raw outputs."""

    feats: tuple[Tensor, ...]  # L x (N, C, H_l, W_l)
    rpn: DenseOutputs  # L x (N, A, H_l, W_l) objectness, L x (N, A*4, H_l, W_l) deltas


class TwoStageDetectorConfig(Schema):
    type: Literal["TwoStageDetector"] = "TwoStageDetector"
    segments: ClassVar[bool] = False  # a Mask R-CNN config: its roi_head may have a mask branch
    backbone: Annotated[BackboneSchema, BACKBONES]
    neck: Maybe[Annotated[NeckSchema, NECKS]] = None
    rpn_head: HeadConfig
    roi_head: Annotated[RoIHeadSchema, ROI_HEADS]
    train_cfg: Maybe[TwoStageTrainConfig] = Field(default_factory=TwoStageTrainConfig)
    test_cfg: TwoStageTestConfig = Field(default_factory=TwoStageTestConfig)

    @model_validator(mode="after")
    def _mask_branch_needs_mask_rcnn(self) -> TwoStageDetectorConfig:
        if getattr(self.roi_head, "mask_head", None) is not None and not self.segments:
            raise ValueError(
                f"model.roi_head.mask_head is set but model.type = {self.type!r} predicts "
                "boxes only: use type = \"MaskRCNN\" (its train_cfg.rcnn has mask_size, its "
                "test_cfg.rcnn mask_thr_binary)")
        return self

    @model_validator(mode="after")
    def _derive_channels(self) -> TwoStageDetectorConfig:
        head_in, head_from = trunk_channels(self.backbone, self.neck)
        connect_head(self.rpn_head, head_in, head_from, "model.rpn_head")
        self.roi_head.connect(head_in, head_from, "model.roi_head")
        return self

    def dense_stage(self) -> DenseStageConfig:
        """The dense head that assigns priors: the RPN with ``train_cfg.rpn``."""
        return DenseStageConfig(head=self.rpn_head,
                                train_cfg=None if self.train_cfg is None else self.train_cfg.rpn,
                                head_key="model.rpn_head", train_key="model.train_cfg.rpn",
                                two_stage=True)


class FasterRCNNConfig(TwoStageDetectorConfig):
    type: Literal["FasterRCNN"] = "FasterRCNN"  # type: ignore[assignment]


class TwoStageDetector(TrunkDetector):
    """``backbone`` -> optional ``neck`` -> ``rpn_head`` -> ``roi_head``; see the module
    docstring."""

    def __init__(self, *, backbone: nn.Module, neck: nn.Module | None, rpn_head: nn.Module,
                 roi_head: nn.Module, train_cfg: TwoStageTrainConfig | None,
                 test_cfg: TwoStageTestConfig | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.rpn_head = rpn_head
        self.roi_head = roi_head
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg if test_cfg is not None else TwoStageTestConfig()

    @classmethod
    def from_config(cls, cfg: TwoStageDetectorConfig, **derived: Any) -> TwoStageDetector:
        backbone, neck = build_trunk(cfg)
        train_cfg = cfg.train_cfg
        rpn_head = HEADS.build(cfg.rpn_head,
                               train_cfg=None if train_cfg is None else train_cfg.rpn,
                               test_cfg=cfg.test_cfg.rpn)
        roi_head = ROI_HEADS.build(cfg.roi_head,
                                   train_cfg=None if train_cfg is None else train_cfg.rcnn,
                                   test_cfg=cfg.test_cfg.rcnn)
        return cls(backbone=backbone, neck=neck, rpn_head=rpn_head, roi_head=roi_head,
                   train_cfg=train_cfg, test_cfg=cfg.test_cfg, **derived)

    num_classes_key: ClassVar[str] = "model.roi_head.bbox_head.num_classes"

    @property
    def num_classes(self) -> int:
        """K, the classes the detector predicts: its RoI head's."""
        return int(self.roi_head.num_classes)

    @property
    def detection_test_cfg(self) -> Any:
        """The final post-processing settings: the RoI head's ``test_cfg`` (``test_cfg.rcnn``)."""
        return self.roi_head.test_cfg

    @property
    def stages(self) -> DetectorStages:
        """Two stages: ``rpn_head`` (proposals with ``test_cfg.rpn``), then ``roi_head``."""
        return DetectorStages(dense_head=self.rpn_head, dense_key="model.rpn_head",
                              roi_head=self.roi_head, proposal_cfg=self.test_cfg.rpn)

    def forward(self, images: Tensor) -> TwoStageOutputs:
        """Features and the RPN's raw outputs (for benchmarks): no proposals, no RoI head."""
        feats = self.extract_feat(images)
        return TwoStageOutputs(feats, self.rpn_head(feats))

    def loss(self, images: ImageBatch, targets: DetTargets) -> dict[str, Tensor]:
        """The RPN's and the RoI head's losses (keys ``loss_*``) and the RoI head's ``acc``."""
        if self.train_cfg is None:
            raise ConfigError(f"{type(self).__name__}.loss needs model.train_cfg; the model was "
                              "built with train_cfg = false")
        feats, rpn_outputs = self(images.tensor)
        losses = dict(self.rpn_head.loss(rpn_outputs, images, targets))
        proposals = self.rpn_head.predict_proposals(rpn_outputs, images,
                                                    self.train_cfg.rpn_proposal)
        losses.update(self.roi_head.loss(feats, proposals, images, targets))
        return losses

    @torch.no_grad()
    def predict_proposals(self, images: ImageBatch) -> Proposals:
        """The RPN's test-time proposals (``test_cfg.rpn``), in network-input pixels."""
        feats, rpn_outputs = self(images.tensor)
        return self.rpn_head.predict_proposals(rpn_outputs, images, self.test_cfg.rpn)

    @torch.no_grad()
    def predict_batch(self, images: ImageBatch, rescale: bool = True) -> DetectionBatch:
        """Detections padded to (N, M), boxes in original-image pixels with ``rescale``."""
        feats, rpn_outputs = self(images.tensor)
        proposals = self.rpn_head.predict_proposals(rpn_outputs, images, self.test_cfg.rpn)
        return self.roi_head.predict(feats, proposals, images, rescale=rescale)

    @torch.no_grad()
    def candidates(self, images: ImageBatch) -> Candidates:
        """The RoI head's detections in network-input pixels, as candidates: test-time
        augmentation merges a two-stage detector's post-NMS detections per view."""
        return detections_as_candidates(self.predict_batch(images, rescale=False))


class FasterRCNN(TwoStageDetector):
    """Faster R-CNN (Ren et al. 2015) with FPN: an RPNHead and a StandardRoIHead."""


DETECTORS.register(TwoStageDetectorConfig)(TwoStageDetector)
DETECTORS.register(FasterRCNNConfig)(FasterRCNN)
