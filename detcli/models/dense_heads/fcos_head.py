"""FCOS's head (Tian et al. 2019): anchor-free, one point per location, distances to the box.

N images, L levels, C input channels, F ``feat_channels``, H_l x W_l the feature map of level
l, R = sum_l H_l * W_l points per image, K classes, G GT slots per image.

Per level, ``stacked_convs`` 3x3 conv + GroupNorm + ReLU layers (``cls_convs.i``,
``reg_convs.i``) feed ``conv_cls`` (K logits per location), ``conv_reg`` (4 distances) and
``conv_centerness`` (1 logit, on the classification tower, or the regression tower with
``centerness_on_reg``); with ``dcn_on_last_conv`` each tower's last conv is a DCNv2
(``cls_convs.{stacked_convs - 1}.conv.conv_offset.weight``, as MMDetection names it). The distances are ``exp(scales.l(conv_reg))`` pixels, or with
``norm_on_bbox`` ``relu(scales.l(conv_reg))`` strides (``predict`` multiplies them by the
level's stride; the output does not depend on train/eval mode). Module names are
MMDetection's, so its checkpoints load with no key mapping.

Call graph:

    loss(outputs, images, targets):    get_targets() (fcos_targets) -> losses
    candidates(outputs, img_shapes):   distances_in_pixels() -> dense_predict.dense_candidates()
    predict(outputs, images, rescale): candidates() -> dense_predict.predict_dense()

``outputs`` is what ``forward(feats)`` returned, a :class:`~detcli.structures.dense.DenseOutputs`
whose ``bbox_deltas`` are the distances and ``score_factors`` the centerness logits.

Loss normalisation, as MMDetection 2.x's ``FCOSHead.loss``: P = the positives of the batch
(at least 1); ``loss_cls`` (focal, every point) / P; ``loss_bbox`` (IoU of decoded boxes) is
weighted by each positive's centerness target and divided by the sum of those targets;
``loss_centerness`` (sigmoid cross-entropy against the centerness target, positives only) / P.
Nothing in a training step loops over images or points or syncs with the host.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Sequence, Union

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from detcli.config.schema import Maybe, Schema
from detcli.errors import ConfigError, DetError
from detcli.models.dcn import DeformConv2dPack
from detcli.models.dense_heads.anchor_head import flatten_levels
from detcli.models.dense_heads.centerness import masked_centerness
from detcli.models.channels import require_in_channels
from detcli.models.dense_heads.dense_predict import clip_shapes, dense_candidates, predict_dense
from detcli.models.dense_heads.retina_head import ConvConfig
from detcli.models.dense_heads.tower import run_tower, twin_towers
from detcli.models.layers import NormConfig, Scale, bias_init_with_prob, normal_init
from detcli.models.losses import CrossEntropyLossConfig, FocalLossConfig, IoULossConfig
from detcli.models.protocols import AssignmentSetup, TrainingRule
from detcli.ops.boxes import box_iou
from detcli.registry import BBOX_CODERS, HEADS, LOSSES, BBoxCoderConfig, LossConfig
from detcli.structures.assignment import Assignment, build_assignment
from detcli.structures.batch import DetTargets, ImageBatch
from detcli.structures.dense import Candidates, DenseOutputs
from detcli.structures.detections import DetectionBatch
from detcli.task.assigners.fcos_rule import (
    DEFAULT_RANGES,
    GT_CHUNK_SIZE,
    FCOSTargetAssigner,
    PointCells,
    PointTargets,
    fcos_targets,
    per_point,
)
from detcli.task.coders.distance_point import DistancePointBBoxCoderConfig
from detcli.task.postprocess import DenseTestConfig
from detcli.task.prior_generators.point_generator import (
    MlvlPointGenerator,
    MlvlPointGeneratorConfig,
    Stride,
)
from detcli.task.train_cfg import DenseTrainConfig


def gn_32() -> NormConfig:
    return NormConfig(type="GN", num_groups=32, requires_grad=True)


def centerness_loss_config() -> CrossEntropyLossConfig:
    return CrossEntropyLossConfig(use_sigmoid=True, loss_weight=1.0)


class FCOSHeadConfig(Schema):
    """FCOSHead settings (MMDetection 2.x names and defaults; the strides default to
    AnchorFreeHead's, the FCOS configs set [8, 16, 32, 64, 128])."""

    type: Literal["FCOSHead"] = "FCOSHead"
    num_classes: int = Field(ge=1)
    in_channels: int | None = Field(None, ge=1)  # derived from the neck; set it only to assert it
    feat_channels: int = Field(256, ge=1)
    stacked_convs: int = Field(4, ge=0)
    strides: list[Stride] = Field(default_factory=lambda: [4, 8, 16, 32, 64], min_length=1)
    # per level [lo, hi] of a positive point's largest distance; INF is written 1e8
    regress_ranges: list[tuple[float, float]] = Field(default_factory=lambda: list(DEFAULT_RANGES))
    center_sampling: bool = False
    center_sample_radius: float = Field(1.5, gt=0)
    # GT slots the target rule matches at once (memory bound N x R x gt_chunk_size x 4;
    # fcos_targets' docstring); 0: all at once
    gt_chunk_size: int = Field(GT_CHUNK_SIZE, ge=0)
    norm_on_bbox: bool = False
    centerness_on_reg: bool = False
    # the last conv of each tower a DCNv2 (MMDetection's AnchorFreeHead; tower.py)
    dcn_on_last_conv: bool = False
    conv_bias: Union[Literal["auto"], bool] = "auto"
    conv_cfg: Maybe[ConvConfig] = None
    norm_cfg: Maybe[NormConfig] = Field(default_factory=gn_32)
    bbox_coder: BBoxCoderConfig = Field(default_factory=DistancePointBBoxCoderConfig)
    loss_cls: LossConfig = Field(default_factory=FocalLossConfig)
    loss_bbox: LossConfig = Field(default_factory=IoULossConfig)
    loss_centerness: LossConfig = Field(default_factory=centerness_loss_config)
    prior_prob: float = Field(0.01, gt=0, lt=1)  # initial foreground probability of every class
    # where a location's point sits in its stride cell: 0.5 the centre (MMDetection), 0 the
    # top-left corner (torchvision's FCOS, whose converted weights expect it)
    prior_offset: float = Field(0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _one_range_per_level(self) -> FCOSHeadConfig:
        if len(self.regress_ranges) != len(self.strides):
            raise ValueError(f"regress_ranges has {len(self.regress_ranges)} entries but strides "
                             f"has {len(self.strides)}; give one [lo, hi] per level")
        bad = [list(r) for r in self.regress_ranges if not r[0] < r[1]]
        if bad:
            raise ValueError(f"regress range {bad[0]} is empty: each needs lo < hi")
        return self


@HEADS.register(FCOSHeadConfig)
class FCOSHead(nn.Module):
    """``forward(feats)``: L x (N, C, H_l, W_l) -> :class:`DenseOutputs` (distances and
    centerness ``score_factors``); a :class:`~detcli.models.protocols.DenseHead`."""

    makes_proposals: ClassVar[bool] = False
    generator_key: ClassVar[str] = "strides"  # the config field its points come from

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        feat_channels: int = 256,
        stacked_convs: int = 4,
        strides: Sequence[Stride] = (4, 8, 16, 32, 64),
        regress_ranges: Sequence[tuple[float, float]] = tuple(DEFAULT_RANGES),
        center_sampling: bool = False,
        center_sample_radius: float = 1.5,
        gt_chunk_size: int = GT_CHUNK_SIZE,
        norm_on_bbox: bool = False,
        centerness_on_reg: bool = False,
        dcn_on_last_conv: bool = False,
        conv_bias: Union[Literal["auto"], bool] = "auto",
        norm_cfg: NormConfig | None,
        prior_prob: float = 0.01,
        prior_offset: float = 0.5,
        bbox_coder: Any = None,
        loss_cls: nn.Module | None = None,
        loss_bbox: nn.Module | None = None,
        loss_centerness: nn.Module | None = None,
        train_cfg: DenseTrainConfig | None = None,
        test_cfg: DenseTestConfig | None = None,
    ) -> None:
        super().__init__()  # settings checked once, by FCOSHeadConfig
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.feat_channels = feat_channels
        self.prior_prob = prior_prob
        self.prior_generator = MlvlPointGenerator(strides=strides, offset=prior_offset)
        self.prior_generator_cfg = MlvlPointGeneratorConfig(strides=strides, offset=prior_offset)
        self.strides = self.prior_generator.strides  # (s_w, s_h) per level
        self.regress_ranges = [(float(lo), float(hi)) for lo, hi in regress_ranges]
        self.center_sampling = center_sampling
        self.center_sample_radius = center_sample_radius
        self.gt_chunk_size = gt_chunk_size
        self.norm_on_bbox = norm_on_bbox
        self.centerness_on_reg = centerness_on_reg
        self.bbox_coder = bbox_coder or BBOX_CODERS.build(DistancePointBBoxCoderConfig())
        self.loss_cls = loss_cls or LOSSES.build(FocalLossConfig())
        self.loss_bbox = loss_bbox or LOSSES.build(IoULossConfig())
        self.loss_centerness = loss_centerness or LOSSES.build(centerness_loss_config())
        for name, loss in (("loss_cls", self.loss_cls), ("loss_centerness", self.loss_centerness)):
            if not getattr(loss, "use_sigmoid", False):
                raise ConfigError(f"FCOSHead needs a sigmoid {name} (no background column); got "
                                  f"{type(loss).__name__} with use_sigmoid = false")
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg if test_cfg is not None else DenseTestConfig()
        # per-level tables as buffers: they follow the module to its device (no host copies)
        self.register_buffer("range_table", torch.tensor(self.regress_ranges), persistent=False)
        self.register_buffer("stride_table", torch.tensor(self.strides, dtype=torch.float32),
                             persistent=False)
        self._init_layers(stacked_convs, conv_bias, norm_cfg, dcn_on_last_conv)
        self.init_weights()

    def _init_layers(self, stacked_convs: int, conv_bias: Union[Literal["auto"], bool],
                     norm_cfg: NormConfig | None, dcn_on_last_conv: bool) -> None:
        """The towers, the three predictors and one Scale per level (MMDetection's names)."""
        self.cls_convs, self.reg_convs, channels = twin_towers(
            self.in_channels, self.feat_channels, stacked_convs, norm_cfg=norm_cfg,
            bias=conv_bias, dcn_on_last_conv=dcn_on_last_conv)
        self.conv_cls = nn.Conv2d(channels, self.num_classes, 3, padding=1)
        self.conv_reg = nn.Conv2d(channels, 4, 3, padding=1)
        self.conv_centerness = nn.Conv2d(channels, 1, 3, padding=1)
        self.scales = nn.ModuleList([Scale(1.0) for _ in self.strides])

    @classmethod
    def from_config(cls, cfg: FCOSHeadConfig, *,
                    train_cfg: DenseTrainConfig | None = None,
                    test_cfg: DenseTestConfig | None = None) -> FCOSHead:
        """Build the parts a resolved config describes; ``in_channels`` is the neck's,
        connected when the detector's config resolved (:mod:`detcli.models.channels`)."""
        in_channels = require_in_channels("FCOSHead", cfg.in_channels, "neck's out_channels")
        settings = cfg.model_dump(include={
            "num_classes", "feat_channels", "stacked_convs", "strides", "regress_ranges",
            "center_sampling", "center_sample_radius", "gt_chunk_size", "norm_on_bbox",
            "centerness_on_reg", "dcn_on_last_conv",
            "conv_bias", "prior_prob", "prior_offset"})
        return cls(**settings, in_channels=in_channels, norm_cfg=cfg.norm_cfg,
                   bbox_coder=BBOX_CODERS.build(cfg.bbox_coder),
                   loss_cls=LOSSES.build(cfg.loss_cls), loss_bbox=LOSSES.build(cfg.loss_bbox),
                   loss_centerness=LOSSES.build(cfg.loss_centerness),
                   train_cfg=train_cfg, test_cfg=test_cfg)

    def init_weights(self) -> None:
        """MMDetection's init: every conv N(0, 0.01) with zero bias; the classifier's bias makes
        each class start at probability ``prior_prob``; a deformable conv keeps MMCV's own init
        (its weight uniform, its ``conv_offset`` zero: a plain conv with mask 0.5)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                normal_init(module, std=0.01)
        normal_init(self.conv_cls, std=0.01, bias=bias_init_with_prob(self.prior_prob))
        for module in self.modules():
            if isinstance(module, DeformConv2dPack):
                module.reset_parameters()

    def forward(self, feats: Sequence[Tensor]) -> DenseOutputs:
        if len(feats) != len(self.strides):
            raise DetError(f"FCOSHead got {len(feats)} feature maps for {len(self.strides)} "
                           f"strides {self.strides}")
        cls_logits, distances, centerness = [], [], []
        for level, x in enumerate(feats):  # x: (N, C, H_l, W_l)
            cls_feat = run_tower(self.cls_convs, x)  # (N, F, H_l, W_l)
            reg_feat = run_tower(self.reg_convs, x)  # (N, F, H_l, W_l)
            cls_logits.append(self.conv_cls(cls_feat))  # (N, K, H_l, W_l)
            centerness.append(self.conv_centerness(
                reg_feat if self.centerness_on_reg else cls_feat))  # (N, 1, H_l, W_l)
            # float32 before exp, so AMP cannot overflow
            reg = self.scales[level](self.conv_reg(reg_feat)).float()  # (N, 4, H_l, W_l)
            distances.append(reg.clamp(min=0) if self.norm_on_bbox else reg.exp())
        return DenseOutputs(cls_logits, distances, centerness)

    def level_priors(self, outputs: DenseOutputs) -> list[Tensor]:
        """Points per level, L x (H_l*W_l, 2), for the feature-map sizes of ``outputs``."""
        sizes = [(x.shape[-2], x.shape[-1]) for x in outputs.cls_logits]
        return self.prior_generator.grid_priors(sizes, device=outputs.cls_logits[0].device)

    def distances_in_pixels(self, distances: Sequence[Tensor]) -> list[Tensor]:
        """L x (N, 4, H_l, W_l) head distances -> pixels (times the stride with norm_on_bbox)."""
        if not self.norm_on_bbox:
            return list(distances)
        return [d * self.stride_table[level].repeat(2)[None, :, None, None]  # (1, 4, 1, 1)
                for level, d in enumerate(distances)]

    # ---- training --------------------------------------------------------------------------

    def training_rule(self) -> TrainingRule:
        """Every point the FCOS rule assigns counts (no sampler); the losses are divided by
        the positives of the batch."""
        return TrainingRule(sampler="PseudoSampler", normaliser="positives")

    def assignment_setup(self) -> AssignmentSetup:
        """The points as stride-sized cells and the FCOS target rule as an assigner (what
        :meth:`explain_assignment` applies, with its ``regions`` for the reports)."""
        assigner = FCOSTargetAssigner(strides=self.strides, regress_ranges=self.regress_ranges,
                                      center_sampling=self.center_sampling,
                                      center_sample_radius=self.center_sample_radius,
                                      gt_chunk_size=self.gt_chunk_size)
        return AssignmentSetup(prior_boxes=PointCells(self.prior_generator), assigner=assigner,
                               generator_key=self.generator_key,
                               generator_cfg=self.prior_generator_cfg,
                               assigner_cfg=assigner.config())

    def loss(self, outputs: DenseOutputs, images: ImageBatch,
             targets: DetTargets) -> dict[str, Tensor]:
        """``{"loss_cls", "loss_bbox", "loss_centerness"}``, normalised as the module says."""
        if outputs.score_factors is None:
            raise DetError("FCOSHead.loss needs its centerness outputs (score_factors); got "
                           "DenseOutputs without them")
        num_classes = self.num_classes
        sizes = [(x.shape[-2], x.shape[-1]) for x in outputs.cls_logits]
        points_per_level = self.prior_generator.grid_priors(
            sizes, device=outputs.cls_logits[0].device, with_stride=True)  # L x (R_l, 4)
        points = torch.cat(points_per_level, dim=0)  # (R, 4): x, y, s_w, s_h
        cls_logits = flatten_levels(outputs.cls_logits, num_classes)  # (N, R, K)
        distances = flatten_levels(outputs.bbox_deltas, 4).float()  # (N, R, 4)
        centerness = flatten_levels(outputs.score_factors, 1)[..., 0]  # (N, R, 1) -> (N, R)
        tgt = self.get_targets(points_per_level, targets)
        positive = tgt.positive  # (N, R)
        num_pos = positive.sum().clamp(min=1).float()  # (): no host sync

        loss_cls = self.loss_cls(cls_logits.reshape(-1, num_classes),  # (N*R, K)
                                 tgt.labels.reshape(-1), avg_factor=num_pos)  # (N*R,)
        centerness_t = masked_centerness(tgt.distances, positive)  # (N, R), 0 off positives
        # off positives, prediction and target are the same stand-in box: zero loss, no NaN
        stand_in = torch.ones_like(distances)  # (N, R, 4)
        pred_boxes = self.bbox_coder.decode(points, torch.where(positive[..., None], distances,
                                                                stand_in))  # (N, R, 4)
        target_boxes = self.bbox_coder.decode(points, torch.where(positive[..., None],
                                                                  tgt.distances, stand_in))
        loss_bbox = self.loss_bbox(pred_boxes.reshape(-1, 4), target_boxes.reshape(-1, 4),
                                   weight=centerness_t.reshape(-1),  # (N*R,)
                                   avg_factor=centerness_t.sum().clamp(min=1e-6))
        loss_centerness = self.loss_centerness(centerness.reshape(-1), centerness_t.reshape(-1),
                                               weight=positive.reshape(-1).float(),
                                               avg_factor=num_pos)
        return {"loss_cls": loss_cls, "loss_bbox": loss_bbox, "loss_centerness": loss_centerness}

    @torch.no_grad()
    def get_targets(self, points_per_level: Sequence[Tensor], targets: DetTargets) -> PointTargets:
        """Points L x (R_l, 4) with strides -> :class:`PointTargets` of the batch; distances are
        in strides with ``norm_on_bbox`` (as the head predicts them), else pixels."""
        counts = [p.shape[0] for p in points_per_level]
        points = torch.cat(points_per_level, dim=0)  # (R, 4)
        ranges = per_point(self.range_table.to(points), counts)  # (R, 2)
        tgt = fcos_targets(points, points[:, 2:], ranges, targets.boxes.to(points),
                           targets.labels, self.num_classes, self.center_sampling,
                           self.center_sample_radius, self.gt_chunk_size)
        if self.norm_on_bbox:
            tgt.distances = tgt.distances / points[:, 2:].repeat(1, 2)  # (N, R, 4) / (R, 4)
        return tgt

    @torch.no_grad()
    def explain_assignment(self, outputs: DenseOutputs, images: ImageBatch,
                           targets: DetTargets,
                           generator: torch.Generator | None = None) -> Assignment:
        """What :meth:`loss` assigns, point by point, from its own :meth:`get_targets`: every
        point is a positive or a negative (no sampler; ``generator`` is not used). Priors are
        the points' stride-sized cells; ``max_iou`` is a cell's IoU with its best GT."""
        sizes = [(x.shape[-2], x.shape[-1]) for x in outputs.cls_logits]
        points_per_level = self.prior_generator.grid_priors(
            sizes, device=outputs.cls_logits[0].device, with_stride=True)  # L x (R_l, 4)
        points = torch.cat(points_per_level, dim=0)  # (R, 4): x, y, s_w, s_h
        level = torch.cat([torch.full((p.shape[0],), i, dtype=torch.long, device=points.device)
                           for i, p in enumerate(points_per_level)])  # (R,)
        cells = torch.cat([points[:, :2] - points[:, 2:] / 2,
                           points[:, :2] + points[:, 2:] / 2], dim=-1)  # (R, 4)
        tgt = self.get_targets(points_per_level, targets)
        gt_boxes = targets.boxes.to(cells)  # (N, G, 4)
        if gt_boxes.shape[1]:
            overlaps = box_iou(gt_boxes, cells).masked_fill(
                (targets.labels < 0)[:, :, None], 0)  # (N, G, R)
            max_iou = overlaps.amax(dim=1)  # (N, R)
        else:
            max_iou = cells.new_zeros(gt_boxes.shape[0], cells.shape[0])
        positive = tgt.positive  # (N, R)
        return build_assignment(cells, level, gt_boxes, tgt.gt_index, tgt.labels, max_iou,
                                positive, ~positive)

    # ---- inference -------------------------------------------------------------------------

    def candidates(self, outputs: DenseOutputs, img_shapes: Tensor | None,
                   priors: Sequence[Tensor] | None = None,
                   static_k: bool = False) -> Candidates:
        """Boxes before NMS (N, P), decoded from the points with the distances in pixels,
        clipped to ``img_shapes`` (N, 2) unless None; ``priors`` default to the points of
        ``outputs``' feature-map sizes."""
        if priors is None:
            priors = self.level_priors(outputs)
        in_pixels = outputs._replace(bbox_deltas=self.distances_in_pixels(outputs.bbox_deltas))
        return dense_candidates(in_pixels, priors, self.bbox_coder, self.test_cfg,
                                max_shape=clip_shapes(img_shapes, outputs.cls_logits[0]),
                                static_k=static_k)

    def predict(self, outputs: DenseOutputs, images: ImageBatch,
                rescale: bool = True) -> DetectionBatch:
        """Detections of every image, padded to ``test_cfg.max_per_img``: class scores times
        centerness, decoded from the points, one batched NMS (boxes in original-image pixels
        with ``rescale``, else network-input pixels)."""
        return predict_dense(self.candidates(outputs, images.img_shapes), images,
                             self.test_cfg, rescale=rescale)
