"""Single-stage detectors: backbone -> neck -> dense head (RetinaNet and its relatives).

N images, H x W the padded network input, L feature levels, K classes, M ``max_per_img``.

The config derives the channels that connect the parts (:mod:`detcli.models.channels`), so a
TOML file never repeats them: ``neck.in_channels`` from the backbone's outputs and
``bbox_head.in_channels`` from the neck's ``out_channels`` (or from the backbone's outputs
without a neck). A value written in the config anyway must agree, or validation fails naming
both. Building reads the resolved config. Attribute names ``backbone``, ``neck`` and
``bbox_head`` give MMDetection's state-dict layout.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from detcli.config.schema import Maybe, Schema
from detcli.models.channels import BackboneSchema, NeckSchema, connect_head, trunk_channels
from detcli.models.protocols import DenseHead, DenseStageConfig, DetectorStages
from detcli.registry import BACKBONES, DETECTORS, HEADS, NECKS, HeadConfig
from detcli.structures.batch import DetTargets, ImageBatch
from detcli.structures.dense import Candidates, DenseOutputs
from detcli.structures.detections import DetectionBatch, Detections
from detcli.task.postprocess import DenseTestConfig
from detcli.task.train_cfg import DenseTrainConfig


def build_trunk(cfg: SingleStageDetectorConfig | Any) -> tuple[nn.Module, nn.Module | None]:
    """The backbone and neck (or None) of a resolved detector config, as it describes them
    (their channels were connected when the config resolved)."""
    backbone = BACKBONES.build(cfg.backbone)
    return backbone, None if cfg.neck is None else NECKS.build(cfg.neck)


class SingleStageDetectorConfig(Schema):
    type: Literal["SingleStageDetector"] = "SingleStageDetector"
    backbone: Annotated[BackboneSchema, BACKBONES]
    neck: Maybe[Annotated[NeckSchema, NECKS]] = None
    bbox_head: HeadConfig
    train_cfg: Maybe[DenseTrainConfig] = Field(default_factory=DenseTrainConfig)
    test_cfg: Maybe[DenseTestConfig] = Field(default_factory=DenseTestConfig)

    @model_validator(mode="after")
    def _derive_channels(self) -> SingleStageDetectorConfig:
        head_in, head_from = trunk_channels(self.backbone, self.neck)
        connect_head(self.bbox_head, head_in, head_from, "model.bbox_head")
        return self

    def dense_stage(self) -> DenseStageConfig:
        """The dense head that assigns priors: ``bbox_head`` with ``train_cfg``."""
        return DenseStageConfig(head=self.bbox_head, train_cfg=self.train_cfg,
                                head_key="model.bbox_head", train_key="model.train_cfg",
                                two_stage=False)


class RetinaNetConfig(SingleStageDetectorConfig):
    type: Literal["RetinaNet"] = "RetinaNet"  # type: ignore[assignment]


class TrunkDetector(nn.Module):
    """What every detector does with its ``backbone`` and optional ``neck``; subclasses add
    their heads, ``stages``, ``loss``, ``predict_batch`` (which ``predict`` unbinds),
    ``candidates``, ``num_classes``, ``detection_test_cfg`` and ``num_classes_key``
    (:class:`~detcli.models.protocols.Detector`)."""

    backbone: nn.Module
    neck: nn.Module | None
    num_classes_key: ClassVar[str]

    def init_weights(self) -> None:
        """Each part's own init; the backbone loads its ``init_cfg`` checkpoint here."""
        for part in self.children():
            if hasattr(part, "init_weights"):
                part.init_weights()

    def extract_feat(self, images: Tensor) -> tuple[Tensor, ...]:
        """(N, 3, H, W) -> L feature maps (N, C, H_l, W_l)."""
        feats = self.backbone(images)
        if self.neck is not None:
            feats = self.neck(feats)
        return tuple(feats)

    def predict(self, images: ImageBatch, rescale: bool = True) -> list[Detections]:
        """One :class:`Detections` per image, scores descending."""
        return self.predict_batch(images, rescale=rescale).unbind()


class SingleStageDetector(TrunkDetector):
    """``backbone`` -> optional ``neck`` -> ``bbox_head``; see the module docstring."""

    num_classes_key: ClassVar[str] = "model.bbox_head.num_classes"  # where the config holds K

    def __init__(self, *, backbone: nn.Module, neck: nn.Module | None,
                 bbox_head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.bbox_head: DenseHead = bbox_head

    @property
    def num_classes(self) -> int:
        """K, the classes the detector predicts: its dense head's."""
        return int(self.bbox_head.num_classes)

    @property
    def detection_test_cfg(self) -> Any:
        """The final post-processing settings: the dense head's ``test_cfg``."""
        return self.bbox_head.test_cfg

    @property
    def stages(self) -> DetectorStages:
        """One stage: the dense ``bbox_head``."""
        return DetectorStages(dense_head=self.bbox_head, dense_key="model.bbox_head")

    @classmethod
    def from_config(cls, cfg: SingleStageDetectorConfig, **derived: Any) -> SingleStageDetector:
        backbone, neck = build_trunk(cfg)
        bbox_head = HEADS.build(cfg.bbox_head, train_cfg=cfg.train_cfg, test_cfg=cfg.test_cfg)
        return cls(backbone=backbone, neck=neck, bbox_head=bbox_head, **derived)

    def forward(self, images: Tensor) -> DenseOutputs:
        """The head's raw per-level outputs (for export and benchmarks): no loss, no NMS."""
        return self.bbox_head(self.extract_feat(images))

    def loss(self, images: ImageBatch, targets: DetTargets) -> dict[str, Tensor]:
        """Training losses; every key starts with ``loss_``."""
        return self.bbox_head.loss(self(images.tensor), images, targets)

    @torch.no_grad()
    def predict_batch(self, images: ImageBatch, rescale: bool = True) -> DetectionBatch:
        """Detections padded to (N, M), boxes in original-image pixels with ``rescale``."""
        return self.bbox_head.predict(self(images.tensor), images, rescale=rescale)

    @torch.no_grad()
    def candidates(self, images: ImageBatch) -> Candidates:
        """The head's candidates before NMS, in network-input pixels (test-time augmentation)."""
        return self.bbox_head.candidates(self(images.tensor), images.img_shapes)


class RetinaNet(SingleStageDetector):
    """RetinaNet: a single-stage detector whose head is a :class:`RetinaHead`."""


DETECTORS.register(SingleStageDetectorConfig)(SingleStageDetector)
DETECTORS.register(RetinaNetConfig)(RetinaNet)
