"""The Region Proposal Network head of Faster R-CNN (Ren et al. 2015): objectness and box deltas.

N images, L levels, C input channels, F ``feat_channels``, H_l x W_l the feature map of level
l, A anchors per location (3 for Faster R-CNN: one scale, three ratios), G GT slots per image,
P proposal slots per image (``max_per_img`` of the proposal config).

Per level, ``rpn_conv`` (one 3x3 conv, or ``num_convs`` 3x3 ConvModules) and a ReLU feed
``rpn_cls`` (A objectness logits per location, one sigmoid class) and ``rpn_reg`` (A*4 deltas
per location), both 1x1 convs. The weights are shared across levels. Module names are
MMDetection's, so its checkpoints load with no key mapping.

Training (:meth:`RPNHead.loss`) is :class:`~.anchor_head.AnchorHead`'s with one class: every GT
is an object whatever its class (MMDetection passes ``gt_labels=None``), so positives are
labelled 0. The RPN's loss is a cross-entropy, so its anchors are sampled (``train_cfg.sampler``,
RandomSampler in Faster R-CNN) and both losses are divided by the sampled positives plus
negatives of the batch, each image counting at least one of each. The keys are
``loss_rpn_cls`` and ``loss_rpn_bbox``.

Inference (:meth:`RPNHead.predict_proposals`) gives :class:`~detcli.structures.proposals.
Proposals` (see :mod:`.proposals`), in network-input pixels. The RPN is no detector on its own:
:meth:`RPNHead.predict` raises.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar, Literal, Sequence

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor, nn

from detcli.config.schema import Schema
from detcli.errors import DetError
from detcli.models.dense_heads.anchor_head import AnchorHead
from detcli.models.channels import require_in_channels
from detcli.models.dense_heads.proposals import proposals_from_candidates, rpn_candidates
from detcli.models.layers import ConvModule, normal_init
from detcli.models.losses import CrossEntropyLossConfig, L1LossConfig
from detcli.registry import (
    BBOX_CODERS,
    HEADS,
    LOSSES,
    PRIOR_GENERATORS,
    BBoxCoderConfig,
    LossConfig,
    PriorGeneratorConfig,
)
from detcli.structures.assignment import Assignment
from detcli.structures.batch import DetTargets, ImageBatch
from detcli.structures.dense import Candidates, DenseOutputs
from detcli.structures.detections import DetectionBatch
from detcli.structures.proposals import Proposals
from detcli.task.coders.delta_xywh import DeltaXYWHBBoxCoderConfig
from detcli.task.prior_generators.anchor_generator import AnchorGeneratorConfig
from detcli.task.train_cfg import DenseTrainConfig
from detcli.task.two_stage_cfg import ProposalConfig


def rpn_anchor_config() -> AnchorGeneratorConfig:
    """Faster R-CNN R50-FPN's anchors: scale 8 x 3 ratios on strides 4..64."""
    return AnchorGeneratorConfig(scales=[8], ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32, 64])


def rpn_loss_cls_config() -> CrossEntropyLossConfig:
    return CrossEntropyLossConfig(use_sigmoid=True, loss_weight=1.0)


class RPNHeadConfig(Schema):
    """RPNHead settings (MMDetection 2.x names and defaults). One class, objectness: there is
    no ``num_classes``."""

    type: Literal["RPNHead"] = "RPNHead"
    in_channels: int | None = Field(None, ge=1)  # derived from the neck; set it only to assert it
    feat_channels: int = Field(256, ge=1)
    num_convs: int = Field(1, ge=1)  # 3x3 convs before rpn_cls / rpn_reg
    anchor_generator: PriorGeneratorConfig = Field(default_factory=rpn_anchor_config)
    bbox_coder: BBoxCoderConfig = Field(default_factory=DeltaXYWHBBoxCoderConfig)
    loss_cls: LossConfig = Field(default_factory=rpn_loss_cls_config)
    loss_bbox: LossConfig = Field(default_factory=L1LossConfig)
    reg_decoded_bbox: bool = False  # true: loss_bbox compares decoded boxes (GIoU), not deltas

    @field_validator("loss_cls")
    @classmethod
    def _sigmoid_loss(cls, value: Schema) -> Schema:
        if not getattr(value, "use_sigmoid", False):
            raise ValueError(
                f"the RPN scores objectness with one sigmoid logit per anchor: {value.type} needs "
                "use_sigmoid = true")
        return value


@HEADS.register(RPNHeadConfig)
class RPNHead(AnchorHead):
    """``forward(feats)``: L x (N, C, H_l, W_l) -> :class:`DenseOutputs` with L x (N, A, H_l,
    W_l) objectness logits and L x (N, A*4, H_l, W_l) deltas.

    ``train_cfg`` (a dense head's: assigner, sampler, ``allowed_border``, ``pos_weight``) is
    needed by :meth:`loss` only; ``test_cfg`` (:class:`ProposalConfig`) is the default of
    :meth:`predict_proposals`.
    """

    makes_proposals: ClassVar[bool] = True  # predict_proposals: the RoI head's input

    def __init__(
        self,
        *,
        in_channels: int,
        feat_channels: int = 256,
        num_convs: int = 1,
        prior_generator: Any = None,
        bbox_coder: Any = None,
        loss_cls: nn.Module | None = None,
        loss_bbox: nn.Module | None = None,
        reg_decoded_bbox: bool = False,
        train_cfg: DenseTrainConfig | None = None,
        test_cfg: ProposalConfig | None = None,
    ) -> None:
        super().__init__(
            num_classes=1,
            prior_generator=prior_generator or PRIOR_GENERATORS.build(rpn_anchor_config()),
            bbox_coder=bbox_coder or BBOX_CODERS.build(DeltaXYWHBBoxCoderConfig()),
            loss_cls=loss_cls or LOSSES.build(rpn_loss_cls_config()),
            loss_bbox=loss_bbox or LOSSES.build(L1LossConfig()),
            reg_decoded_bbox=reg_decoded_bbox,
            train_cfg=train_cfg,
        )
        # predict_proposals' default, in place of the dense test_cfg AnchorHead keeps
        self.test_cfg = test_cfg if test_cfg is not None else ProposalConfig()
        self.in_channels = in_channels
        self.feat_channels = feat_channels
        self.num_convs = num_convs
        num_anchors = self.num_base_priors
        if num_convs == 1:
            self.rpn_conv: nn.Module = nn.Conv2d(in_channels, feat_channels, 3, padding=1)
        else:  # MMDetection: ConvModules, not in place (the ReLU after them would clash)
            self.rpn_conv = nn.Sequential(*[
                ConvModule(in_channels if i == 0 else feat_channels, feat_channels, 3, padding=1,
                           inplace=False)
                for i in range(num_convs)])
        self.rpn_cls = nn.Conv2d(feat_channels, num_anchors, 1)
        self.rpn_reg = nn.Conv2d(feat_channels, num_anchors * 4, 1)
        self.init_weights()

    @classmethod
    def from_config(
        cls,
        cfg: RPNHeadConfig,
        *,
        train_cfg: DenseTrainConfig | None = None,
        test_cfg: ProposalConfig | None = None,
    ) -> RPNHead:
        """Build the parts a resolved config describes; ``in_channels`` is the neck's,
        connected when the detector's config resolved (:mod:`detcli.models.channels`)."""
        in_channels = require_in_channels("RPNHead", cfg.in_channels, "neck's out_channels")
        return cls(
            in_channels=in_channels,
            feat_channels=cfg.feat_channels,
            num_convs=cfg.num_convs,
            prior_generator=PRIOR_GENERATORS.build(cfg.anchor_generator),
            bbox_coder=BBOX_CODERS.build(cfg.bbox_coder),
            loss_cls=LOSSES.build(cfg.loss_cls),
            loss_bbox=LOSSES.build(cfg.loss_bbox),
            reg_decoded_bbox=cfg.reg_decoded_bbox,
            train_cfg=train_cfg,
            test_cfg=test_cfg,
        )

    def init_weights(self) -> None:
        """MMDetection's init: every conv (those inside ConvModules too) N(0, 0.01), bias 0."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                normal_init(module, std=0.01)

    def forward(self, feats: Sequence[Tensor]) -> DenseOutputs:
        cls_logits: list[Tensor] = []
        bbox_deltas: list[Tensor] = []
        for x in feats:  # x: (N, C, H_l, W_l)
            x = F.relu(self.rpn_conv(x))  # (N, F, H_l, W_l)
            cls_logits.append(self.rpn_cls(x))  # (N, A, H_l, W_l)
            bbox_deltas.append(self.rpn_reg(x))  # (N, A*4, H_l, W_l)
        return DenseOutputs(cls_logits, bbox_deltas)

    # ---- training --------------------------------------------------------------------------

    def loss(self, outputs: DenseOutputs, images: ImageBatch,
             targets: DetTargets) -> dict[str, Tensor]:
        """``{"loss_rpn_cls": (), "loss_rpn_bbox": ()}``: objectness against every GT, both
        divided by the sampled positives plus negatives of the batch (module docstring)."""
        objects = replace(targets, labels=targets.labels.clamp(max=0))  # (N, G): 0, or -1 padding
        losses = super().loss(outputs, images, objects)
        return {"loss_rpn_cls": losses["loss_cls"], "loss_rpn_bbox": losses["loss_bbox"]}

    def explain_assignment(self, outputs: DenseOutputs, images: ImageBatch,
                           targets: DetTargets,
                           generator: torch.Generator | None = None) -> Assignment:
        """:meth:`AnchorHead.explain_assignment` with every GT as an object (label 0), as
        :meth:`loss` assigns them."""
        objects = replace(targets, labels=targets.labels.clamp(max=0))  # (N, G): 0, or -1
        return super().explain_assignment(outputs, images, objects, generator)

    # ---- inference -------------------------------------------------------------------------

    def candidates(self, outputs: DenseOutputs, img_shapes: Tensor | None,
                   priors: Sequence[Tensor] | None = None, static_k: bool = False,
                   cfg: ProposalConfig | None = None) -> Candidates:
        """The proposals' candidates (N, C) before NMS (:func:`.proposals.rpn_candidates`):
        the ``nms_pre`` best anchors of every level, decoded and clipped to ``img_shapes``
        unless None, labelled by their level, all valid (the RPN has no score threshold).
        ``cfg`` None: the head's ``test_cfg``."""
        if priors is None:
            priors = self.level_priors(outputs)  # L x (H_l*W_l*A, 4)
        return rpn_candidates(outputs, priors, self.bbox_coder, img_shapes,
                              cfg if cfg is not None else self.test_cfg, static_k=static_k)

    @torch.no_grad()
    def predict_proposals(self, outputs: DenseOutputs, images: ImageBatch,
                          cfg: ProposalConfig | None = None) -> Proposals:
        """Proposals of every image, padded to ``cfg.max_per_img`` slots, in network-input
        pixels. ``cfg`` None: the head's ``test_cfg`` (the detector passes
        ``train_cfg.rpn_proposal`` while training)."""
        cfg = cfg if cfg is not None else self.test_cfg
        return proposals_from_candidates(self.candidates(outputs, images.img_shapes, cfg=cfg),
                                         cfg)

    def predict(self, outputs: DenseOutputs, images: ImageBatch,
                rescale: bool = True) -> DetectionBatch:
        """Not a detector: raises :class:`DetError` (use :meth:`predict_proposals`)."""
        raise DetError(
            "RPNHead predicts proposals, not detections: call predict_proposals(outputs, images, "
            "cfg), or use it as the rpn_head of a two-stage detector")
