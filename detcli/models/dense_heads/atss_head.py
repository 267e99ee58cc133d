"""ATSS's head (Zhang et al. 2020): RetinaNet-like towers with GroupNorm, one anchor per
location, a centerness branch, and adaptive (ATSS) assignment.

N images, L levels, C input channels, F ``feat_channels``, H_l x W_l the feature map of level
l, A anchors per location (1 in the ATSS configs), R = sum_l H_l * W_l * A priors per image,
K classes.

Per level, ``stacked_convs`` 3x3 conv + GroupNorm + ReLU layers (``cls_convs.i``,
``reg_convs.i``) feed ``atss_cls`` (A*K logits), ``atss_reg`` (A*4 deltas, times the level's
learnable ``scales.l``) and ``atss_centerness`` (A logits, on the regression tower). Module
names are MMDetection's. Targets come from :class:`~.anchor_head.AnchorHead` with the
configured assigner (``ATSSAssigner``) and always the PseudoSampler, as MMDetection's ATSS.

Loss normalisation, as MMDetection 2.x's ``ATSSHead.loss``: P = sum over images of max(1,
positives of the image); ``loss_cls`` (focal) / P; ``loss_bbox`` (GIoU of the decoded box and
its GT, ``reg_decoded_bbox``) weighted by each positive's centerness target and divided by the
sum of those targets (at least 1); ``loss_centerness`` (sigmoid cross-entropy, positives) / P.
The centerness target of an anchor is that of its centre in its GT box
(:func:`~.centerness.centerness_target`).
"""

from __future__ import annotations

import logging
from typing import Any, Literal, Sequence

import torch
from pydantic import Field
from torch import Tensor, nn

from detcli.config.schema import Maybe, Schema
from detcli.errors import ConfigError, DetError
from detcli.models.dense_heads.anchor_head import AnchorHead, flatten_levels
from detcli.models.dense_heads.centerness import masked_centerness
from detcli.models.channels import require_in_channels
from detcli.models.dense_heads.fcos_head import centerness_loss_config, gn_32
from detcli.models.dense_heads.retina_head import ConvConfig
from detcli.models.dense_heads.tower import run_tower, twin_towers
from detcli.models.layers import NormConfig, Scale, bias_init_with_prob, normal_init
from detcli.models.losses import FocalLossConfig, GIoULossConfig
from detcli.registry import (
    BBOX_CODERS,
    HEADS,
    LOSSES,
    PRIOR_GENERATORS,
    BBoxCoderConfig,
    LossConfig,
    PriorGeneratorConfig,
)
from detcli.structures.batch import DetTargets, ImageBatch
from detcli.structures.dense import DenseOutputs
from detcli.task.coders.delta_xywh import DeltaXYWHBBoxCoderConfig
from detcli.task.coders.distance_point import points_to_distances
from detcli.task.postprocess import DenseTestConfig
from detcli.task.prior_generators.anchor_generator import AnchorGeneratorConfig
from detcli.task.samplers.pseudo_sampler import PseudoSamplerConfig
from detcli.task.train_cfg import DenseTrainConfig

log = logging.getLogger(__name__)


def atss_anchor_config() -> AnchorGeneratorConfig:
    """MMDetection ATSS's anchors: one 8-stride square per location on strides 8..128."""
    return AnchorGeneratorConfig(ratios=[1.0], octave_base_scale=8, scales_per_octave=1,
                                 strides=[8, 16, 32, 64, 128])


def atss_loss_bbox_config() -> GIoULossConfig:
    return GIoULossConfig(loss_weight=2.0)


def atss_coder_config() -> DeltaXYWHBBoxCoderConfig:
    return DeltaXYWHBBoxCoderConfig(target_means=[0.0, 0.0, 0.0, 0.0],
                                    target_stds=[0.1, 0.1, 0.2, 0.2])


class ATSSHeadConfig(Schema):
    """ATSSHead settings (MMDetection 2.x names and defaults)."""

    type: Literal["ATSSHead"] = "ATSSHead"
    num_classes: int = Field(ge=1)
    in_channels: int | None = Field(None, ge=1)  # derived from the neck; set it only to assert it
    stacked_convs: int = Field(4, ge=0)
    feat_channels: int = Field(256, ge=1)
    conv_cfg: Maybe[ConvConfig] = None
    norm_cfg: Maybe[NormConfig] = Field(default_factory=gn_32)
    anchor_generator: PriorGeneratorConfig = Field(default_factory=atss_anchor_config)
    bbox_coder: BBoxCoderConfig = Field(default_factory=atss_coder_config)
    loss_cls: LossConfig = Field(default_factory=FocalLossConfig)
    loss_bbox: LossConfig = Field(default_factory=atss_loss_bbox_config)
    loss_centerness: LossConfig = Field(default_factory=centerness_loss_config)
    reg_decoded_bbox: bool = True  # the box loss compares decoded boxes (GIoU); ATSS needs it
    prior_prob: float = Field(0.01, gt=0, lt=1)  # initial foreground probability of every class


@HEADS.register(ATSSHeadConfig)
class ATSSHead(AnchorHead):
    """``forward(feats)``: L x (N, C, H_l, W_l) -> :class:`DenseOutputs` with centerness
    ``score_factors``; candidates and predict are :class:`AnchorHead`'s."""

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        stacked_convs: int = 4,
        feat_channels: int = 256,
        norm_cfg: NormConfig | None,
        prior_prob: float = 0.01,
        prior_generator: Any = None,
        bbox_coder: Any = None,
        loss_cls: nn.Module | None = None,
        loss_bbox: nn.Module | None = None,
        loss_centerness: nn.Module | None = None,
        reg_decoded_bbox: bool = True,
        train_cfg: DenseTrainConfig | None = None,
        test_cfg: DenseTestConfig | None = None,
    ) -> None:
        if not reg_decoded_bbox:
            raise ConfigError("ATSSHead compares decoded boxes with their GT (its centerness "
                              "target needs the GT box): set reg_decoded_bbox = true")
        super().__init__(
            num_classes=num_classes,
            prior_generator=prior_generator or PRIOR_GENERATORS.build(atss_anchor_config()),
            bbox_coder=bbox_coder or BBOX_CODERS.build(atss_coder_config()),
            loss_cls=loss_cls or LOSSES.build(FocalLossConfig()),
            loss_bbox=loss_bbox or LOSSES.build(atss_loss_bbox_config()),
            reg_decoded_bbox=True,
            train_cfg=train_cfg,
            test_cfg=test_cfg,
        )
        self.sampling = False  # MMDetection's ATSS: every assigned prior, positives normalise
        self.loss_centerness = loss_centerness or LOSSES.build(centerness_loss_config())
        if not getattr(self.loss_centerness, "use_sigmoid", False):
            raise ConfigError("ATSSHead needs a sigmoid loss_centerness (use_sigmoid = true)")
        self.in_channels = in_channels
        self.feat_channels = feat_channels
        self.prior_prob = prior_prob
        num_anchors = self.num_base_priors
        self.cls_convs, self.reg_convs, channels = twin_towers(
            in_channels, feat_channels, stacked_convs, norm_cfg=norm_cfg)
        self.atss_cls = nn.Conv2d(channels, num_anchors * num_classes, 3, padding=1)
        self.atss_reg = nn.Conv2d(channels, num_anchors * 4, 3, padding=1)
        self.atss_centerness = nn.Conv2d(channels, num_anchors, 3, padding=1)
        self.scales = nn.ModuleList([Scale(1.0) for _ in self.prior_generator.strides])
        self.init_weights()

    @classmethod
    def from_config(cls, cfg: ATSSHeadConfig, *,
                    train_cfg: DenseTrainConfig | None = None,
                    test_cfg: DenseTestConfig | None = None) -> ATSSHead:
        """Build the parts a resolved config describes; ``in_channels`` is the neck's,
        connected when the detector's config resolved (:mod:`detcli.models.channels`)."""
        in_channels = require_in_channels("ATSSHead", cfg.in_channels, "neck's out_channels")
        return cls(num_classes=cfg.num_classes, in_channels=in_channels,
                   stacked_convs=cfg.stacked_convs, feat_channels=cfg.feat_channels,
                   norm_cfg=cfg.norm_cfg, prior_prob=cfg.prior_prob,
                   prior_generator=PRIOR_GENERATORS.build(cfg.anchor_generator),
                   bbox_coder=BBOX_CODERS.build(cfg.bbox_coder),
                   loss_cls=LOSSES.build(cfg.loss_cls), loss_bbox=LOSSES.build(cfg.loss_bbox),
                   loss_centerness=LOSSES.build(cfg.loss_centerness),
                   reg_decoded_bbox=cfg.reg_decoded_bbox, train_cfg=train_cfg, test_cfg=test_cfg)

    def _sampler_config(self, train_cfg: DenseTrainConfig) -> Any:
        if train_cfg.sampler.type != "PseudoSampler":
            log.warning("ATSSHead keeps every assigned prior: train_cfg.sampler %s is not used",
                        train_cfg.sampler.type)
        return PseudoSamplerConfig()

    def init_weights(self) -> None:
        """MMDetection's init: every conv N(0, 0.01) with zero bias; the classifier's bias makes
        each class start at probability ``prior_prob``."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                normal_init(module, std=0.01)
        normal_init(self.atss_cls, std=0.01, bias=bias_init_with_prob(self.prior_prob))

    def forward(self, feats: Sequence[Tensor]) -> DenseOutputs:
        cls_logits, bbox_deltas, centerness = [], [], []
        for level, x in enumerate(feats):  # x: (N, C, H_l, W_l)
            cls_feat = run_tower(self.cls_convs, x)  # (N, F, H_l, W_l)
            reg_feat = run_tower(self.reg_convs, x)  # (N, F, H_l, W_l)
            cls_logits.append(self.atss_cls(cls_feat))  # (N, A*K, H_l, W_l)
            bbox_deltas.append(self.scales[level](self.atss_reg(reg_feat)).float())  # (N, A*4, ..)
            centerness.append(self.atss_centerness(reg_feat))  # (N, A, H_l, W_l)
        return DenseOutputs(cls_logits, bbox_deltas, centerness)

    # ---- training --------------------------------------------------------------------------

    def loss(self, outputs: DenseOutputs, images: ImageBatch,
             targets: DetTargets) -> dict[str, Tensor]:
        """``{"loss_cls", "loss_bbox", "loss_centerness"}``, normalised as the module says."""
        if outputs.score_factors is None:
            raise DetError("ATSSHead.loss needs its centerness outputs (score_factors); got "
                           "DenseOutputs without them")
        num_classes = self.num_classes
        priors = torch.cat(self.level_priors(outputs), dim=0)  # (R, 4)
        cls_logits = flatten_levels(outputs.cls_logits, num_classes)  # (N, R, K)
        bbox_deltas = flatten_levels(outputs.bbox_deltas, 4)  # (N, R, 4)
        centerness = flatten_levels(outputs.score_factors, 1)[..., 0]  # (N, R, 1) -> (N, R)
        sizes = [(x.shape[-2], x.shape[-1]) for x in outputs.cls_logits]
        tgt = self.get_targets(priors, sizes, images, targets)
        positive = tgt.bbox_weights > 0  # (N, R)

        loss_cls = self.loss_cls(cls_logits.reshape(-1, num_classes),  # (N*R, K)
                                 tgt.labels.reshape(-1), tgt.label_weights.reshape(-1),
                                 avg_factor=tgt.avg_factor)
        gt_boxes = tgt.bbox_targets  # (N, R, 4): the matched GT box (reg_decoded_bbox)
        centerness_t = masked_centerness(points_to_distances(
            (priors[:, :2] + priors[:, 2:]) * 0.5, gt_boxes), positive)  # (N, R)
        anchors = priors.expand_as(bbox_deltas)  # (N, R, 4)
        decoded = self.bbox_coder.decode(priors, bbox_deltas.float())  # (N, R, 4)
        # off positives, prediction and target are the anchor itself: zero loss, no NaN
        pred_boxes = torch.where(positive[..., None], decoded, anchors)  # (N, R, 4)
        target_boxes = torch.where(positive[..., None], gt_boxes, anchors)  # (N, R, 4)
        loss_bbox = self.loss_bbox(pred_boxes.reshape(-1, 4), target_boxes.reshape(-1, 4),
                                   weight=centerness_t.reshape(-1),  # (N*R,)
                                   avg_factor=centerness_t.sum().clamp(min=1))
        loss_centerness = self.loss_centerness(centerness.reshape(-1), centerness_t.reshape(-1),
                                               weight=positive.reshape(-1).float(),
                                               avg_factor=tgt.avg_factor)
        return {"loss_cls": loss_cls, "loss_bbox": loss_bbox, "loss_centerness": loss_centerness}
