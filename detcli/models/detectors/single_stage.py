"""Single-stage detectors: backbone -> neck -> dense head (RetinaNet and its relatives).

N images, H x W the padded network input, L feature levels, K classes, M ``max_per_img``.

The config derives the channels that connect the parts, so a TOML file never repeats them:
``neck.in_channels`` from the backbone's outputs and ``bbox_head.in_channels`` from the neck's
``out_channels`` (or from the backbone's outputs without a neck). A value written in the config
anyway must agree, or validation fails naming both. Attribute names ``backbone``, ``neck`` and
``bbox_head`` give MMDetection's state-dict layout.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from detcli.config.schema import Maybe, Schema, derive_or_check
from detcli.errors import ConfigError
from detcli.models.protocols import DenseHead
from detcli.registry import (
    BACKBONES,
    DETECTORS,
    HEADS,
    NECKS,
    BackboneConfig,
    HeadConfig,
    NeckConfig,
)
from detcli.structures.batch import DetTargets, ImageBatch
from detcli.structures.dense import Candidates, DenseOutputs
from detcli.structures.detections import DetectionBatch, Detections
from detcli.task.postprocess import DenseTestConfig
from detcli.task.train_cfg import DenseTrainConfig


def _describe(cfg: Schema, where: str) -> str:
    depth = getattr(cfg, "depth", None)
    kind = getattr(cfg, "type", type(cfg).__name__)
    return f"{where} ({kind} depth {depth})" if depth is not None else f"{where} ({kind})"


def backbone_out_channels(backbone: Schema) -> list[int] | None:
    """The channels of each backbone output, when its config can tell without building."""
    out = getattr(backbone, "out_channels", None)
    return list(out()) if callable(out) else None


def derive_trunk_channels(cfg: Any) -> tuple[int | None, str]:
    """Derive (or check) ``neck.in_channels`` from the backbone, and say what a head reads:
    -> (its channels, or None when the config cannot tell; where they come from)."""
    feats = backbone_out_channels(cfg.backbone)
    feats_from = _describe(cfg.backbone, "model.backbone")
    if cfg.neck is not None:
        if feats is not None:
            derive_or_check(cfg.neck, "in_channels", feats, feats_from, "model.neck.in_channels")
        head_in = getattr(cfg.neck, "out_channels", None)
        return head_in, f"model.neck ({cfg.neck.type} out_channels {head_in})"
    if feats is not None and len(set(feats)) == 1:
        return feats[0], feats_from
    return None, feats_from


def build_trunk(cfg: Any) -> tuple[nn.Module, nn.Module | None, int]:
    """The backbone and neck of a detector config -> (backbone, neck or None, the channels of
    each feature map the heads read)."""
    backbone = BACKBONES.build(cfg.backbone)
    channels = list(backbone.out_channels)
    if cfg.neck is not None:
        neck = NECKS.build(cfg.neck, in_channels=channels)
        return backbone, neck, neck.out_channels
    if len(set(channels)) == 1:
        return backbone, None, channels[0]
    raise ConfigError(
        f"without a neck the heads read the backbone's outputs directly, but their "
        f"channels {channels} differ; add a neck (e.g. FPN) or use one out_index")


class SingleStageDetectorConfig(Schema):
    type: Literal["SingleStageDetector"] = "SingleStageDetector"
    backbone: BackboneConfig
    neck: Maybe[NeckConfig] = None
    bbox_head: HeadConfig
    train_cfg: Maybe[DenseTrainConfig] = Field(default_factory=DenseTrainConfig)
    test_cfg: Maybe[DenseTestConfig] = Field(default_factory=DenseTestConfig)

    @model_validator(mode="after")
    def _derive_channels(self) -> SingleStageDetectorConfig:
        head_in, head_from = derive_trunk_channels(self)
        if head_in is not None:
            derive_or_check(self.bbox_head, "in_channels", head_in, head_from,
                            "model.bbox_head.in_channels")
        return self


class RetinaNetConfig(SingleStageDetectorConfig):
    type: Literal["RetinaNet"] = "RetinaNet"  # type: ignore[assignment]


class TrunkDetector(nn.Module):
    """What every detector does with its ``backbone`` and optional ``neck``; subclasses add
    their heads, ``loss``, ``predict_batch`` (which ``predict`` unbinds), ``candidates``,
    ``num_classes``, ``detection_test_cfg`` and ``num_classes_key``
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

    @classmethod
    def from_config(cls, cfg: SingleStageDetectorConfig, **derived: Any) -> SingleStageDetector:
        backbone, neck, head_in = build_trunk(cfg)
        bbox_head = HEADS.build(cfg.bbox_head, in_channels=head_in,
                                train_cfg=cfg.train_cfg, test_cfg=cfg.test_cfg)
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
