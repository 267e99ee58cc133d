"""RetinaNet's head (Lin et al. 2017): two conv towers over every FPN level, sigmoid classes.

N images, L levels, C input channels, F ``feat_channels``, H_l x W_l the feature map of level
l, A anchors per location (9 for RetinaNet), K classes.

Per level, ``stacked_convs`` 3x3 conv + ReLU layers (``cls_convs.i``, ``reg_convs.i``) feed
``retina_cls`` (A*K logits per location) and ``retina_reg`` (A*4 deltas per location); the
towers are :func:`~.tower.twin_towers`. The
weights are shared across levels. Module names are MMDetection's, so its checkpoints load with
no key mapping. Targets, loss and prediction are :class:`~.anchor_head.AnchorHead`'s.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

from pydantic import Field
from torch import Tensor, nn

from detcli.config.schema import Maybe, Schema
from detcli.models.dense_heads.anchor_head import AnchorHead
from detcli.models.channels import require_in_channels
from detcli.models.dense_heads.tower import run_tower, twin_towers
from detcli.models.layers import NormConfig, bias_init_with_prob, normal_init
from detcli.models.losses import FocalLossConfig, L1LossConfig
from detcli.registry import (
    BBOX_CODERS,
    HEADS,
    LOSSES,
    PRIOR_GENERATORS,
    BBoxCoderConfig,
    LossConfig,
    PriorGeneratorConfig,
)
from detcli.structures.dense import DenseOutputs
from detcli.task.coders.delta_xywh import DeltaXYWHBBoxCoderConfig
from detcli.task.postprocess import DenseTestConfig
from detcli.task.prior_generators.anchor_generator import AnchorGeneratorConfig
from detcli.task.train_cfg import DenseTrainConfig


def retina_anchor_config() -> AnchorGeneratorConfig:
    """MMDetection RetinaNet's anchors: 3 octave scales x 3 ratios on strides 8..128."""
    return AnchorGeneratorConfig(octave_base_scale=4, scales_per_octave=3,
                                 ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64, 128])


class ConvConfig(Schema):
    """MMCV's ``conv_cfg``; only a plain ``Conv2d`` is available."""

    type: Literal["Conv2d", "Conv"] = "Conv2d"


class RetinaHeadConfig(Schema):
    """RetinaHead settings (MMDetection 2.x names and defaults)."""

    type: Literal["RetinaHead"] = "RetinaHead"
    num_classes: int = Field(ge=1)
    in_channels: int | None = Field(None, ge=1)  # derived from the neck; set it only to assert it
    stacked_convs: int = Field(4, ge=0)
    feat_channels: int = Field(256, ge=1)
    conv_cfg: Maybe[ConvConfig] = None
    norm_cfg: Maybe[NormConfig] = None
    anchor_generator: PriorGeneratorConfig = Field(default_factory=retina_anchor_config)
    bbox_coder: BBoxCoderConfig = Field(default_factory=DeltaXYWHBBoxCoderConfig)
    loss_cls: LossConfig = Field(default_factory=FocalLossConfig)
    loss_bbox: LossConfig = Field(default_factory=L1LossConfig)
    reg_decoded_bbox: bool = False  # true: loss_bbox compares decoded boxes (GIoU), not deltas
    prior_prob: float = Field(0.01, gt=0, lt=1)  # initial foreground probability of every class


@HEADS.register(RetinaHeadConfig)
class RetinaHead(AnchorHead):
    """``forward(feats)``: L x (N, C, H_l, W_l) -> :class:`DenseOutputs`."""

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        stacked_convs: int = 4,
        feat_channels: int = 256,
        norm_cfg: NormConfig | None = None,
        prior_prob: float = 0.01,
        prior_generator: Any = None,
        bbox_coder: Any = None,
        loss_cls: nn.Module | None = None,
        loss_bbox: nn.Module | None = None,
        reg_decoded_bbox: bool = False,
        train_cfg: DenseTrainConfig | None = None,
        test_cfg: DenseTestConfig | None = None,
    ) -> None:
        super().__init__(
            num_classes=num_classes,
            prior_generator=prior_generator or PRIOR_GENERATORS.build(retina_anchor_config()),
            bbox_coder=bbox_coder or BBOX_CODERS.build(DeltaXYWHBBoxCoderConfig()),
            loss_cls=loss_cls or LOSSES.build(FocalLossConfig()),
            loss_bbox=loss_bbox or LOSSES.build(L1LossConfig()),
            reg_decoded_bbox=reg_decoded_bbox,
            train_cfg=train_cfg,
            test_cfg=test_cfg,
        )
        self.in_channels = in_channels
        self.feat_channels = feat_channels
        self.prior_prob = prior_prob
        num_anchors = self.num_base_priors
        self.cls_convs, self.reg_convs, channels = twin_towers(
            in_channels, feat_channels, stacked_convs, norm_cfg=norm_cfg)
        self.retina_cls = nn.Conv2d(channels, num_anchors * num_classes, 3, padding=1)
        self.retina_reg = nn.Conv2d(channels, num_anchors * 4, 3, padding=1)
        self.init_weights()

    @classmethod
    def from_config(
        cls,
        cfg: RetinaHeadConfig,
        *,
        train_cfg: DenseTrainConfig | None = None,
        test_cfg: DenseTestConfig | None = None,
    ) -> RetinaHead:
        """Build the parts a resolved config describes; ``in_channels`` is the neck's,
        connected when the detector's config resolved (:mod:`detcli.models.channels`)."""
        in_channels = require_in_channels("RetinaHead", cfg.in_channels, "neck's out_channels")
        return cls(
            num_classes=cfg.num_classes,
            in_channels=in_channels,
            stacked_convs=cfg.stacked_convs,
            feat_channels=cfg.feat_channels,
            norm_cfg=cfg.norm_cfg,
            prior_prob=cfg.prior_prob,
            prior_generator=PRIOR_GENERATORS.build(cfg.anchor_generator),
            bbox_coder=BBOX_CODERS.build(cfg.bbox_coder),
            loss_cls=LOSSES.build(cfg.loss_cls),
            loss_bbox=LOSSES.build(cfg.loss_bbox),
            reg_decoded_bbox=cfg.reg_decoded_bbox,
            train_cfg=train_cfg,
            test_cfg=test_cfg,
        )

    def init_weights(self) -> None:
        """MMDetection's init: every conv N(0, 0.01) with zero bias; the classifier's bias makes
        each class start at probability ``prior_prob``, so the loss is not swamped by negatives."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                normal_init(module, std=0.01)
        normal_init(self.retina_cls, std=0.01, bias=bias_init_with_prob(self.prior_prob))

    def forward(self, feats: Sequence[Tensor]) -> DenseOutputs:
        cls_logits: list[Tensor] = []
        bbox_deltas: list[Tensor] = []
        for x in feats:  # x: (N, C, H_l, W_l)
            cls_feat = run_tower(self.cls_convs, x)  # (N, F, H_l, W_l)
            reg_feat = run_tower(self.reg_convs, x)  # (N, F, H_l, W_l)
            cls_logits.append(self.retina_cls(cls_feat))  # (N, A*K, H_l, W_l)
            bbox_deltas.append(self.retina_reg(reg_feat))  # (N, A*4, H_l, W_l)
        return DenseOutputs(cls_logits, bbox_deltas)
