"""RTMDet's head (Lyu et al. 2022), as MMDetection 3.3's ``RTMDetSepBNHead``.

N images, L levels (strides 8, 16, 32 in the RTMDet configs), C input channels, F
``feat_channels``, H_l x W_l the feature map of level l, R = sum_l H_l * W_l points per image,
G GT slots per image, K classes.

Layers (MMDetection's names, so its checkpoints load strictly): per level l a classification
and a regression tower of ``stacked_convs`` 3 x 3 ConvModules (``cls_convs.l.i``,
``reg_convs.l.i``; depthwise-separable with ``use_depthwise``) whose convs are *shared* across
levels with ``share_conv`` while each level keeps its own BN (the state dict lists the shared
weights under every level, as MMDetection's does), and per level ``pred_kernel_size`` predictors
``rtm_cls.l`` (K), ``rtm_reg.l`` (4) and, with ``with_objectness``, ``rtm_obj.l`` (1).

Outputs (:class:`~detcli.structures.dense.DenseOutputs`, no score factors): class logits
(N, K, H_l, W_l) -- with objectness the logit of sqrt(sigmoid(cls) * sigmoid(obj)) -- and the
distances (left, top, right, bottom) in pixels (N, 4, H_l, W_l): ``rtm_reg`` times the stride,
after ``exp`` with ``exp_on_reg`` (tiny and s regress raw distances, which may be negative).
Points are ``MlvlPointGenerator`` with offset 0 (a cell's top-left corner).

Loss, as ``RTMDetHead.loss_by_feat`` batched over images: the decoded boxes and the logits,
detached, go to :class:`~detcli.task.assigners.dynamic_soft_label.DynamicSoftLabelAssigner`;
its positives get their class's soft target q = IoU(predicted box, GT), every valid point is
supervised by QualityFocalLoss (negatives towards 0); GIoU of the positives' decoded boxes
with their GT, weighted by q. Both are divided by the sum of q over the batch (under DDP its
mean over the ranks, as MMDetection's ``reduce_mean``; at least 1).
Nothing loops over images or GT, nothing reads a value back to the host.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Sequence

import torch
from pydantic import Field
from torch import Tensor, nn

from detcli.config.schema import Schema
from detcli.errors import ConfigError, DetError
from detcli.models.channels import require_in_channels
from detcli.models.dense_heads.anchor_head import flatten_levels
from detcli.models.dense_heads.dense_predict import clip_shapes, dense_candidates, predict_dense
from detcli.models.layers import (
    ActConfig,
    NormConfig,
    bias_init_with_prob,
    bn_momentum_003,
    constant_init,
    conv_module,
    is_norm,
    normal_init,
    silu_act,
)
from detcli.models.losses import GIoULossConfig
from detcli.models.losses.gfocal_loss import QualityFocalLossConfig
from detcli.models.protocols import AssignmentSetup, PredictedPriors, TrainingRule
from detcli.models.query_heads.detr_head import mean_over_ranks
from detcli.ops.logits import inverse_sigmoid
from detcli.registry import ASSIGNERS, BBOX_CODERS, HEADS, LOSSES, BBoxCoderConfig, LossConfig
from detcli.structures.assignment import Assignment, build_assignment
from detcli.structures.batch import DetTargets, ImageBatch
from detcli.structures.dense import Candidates, DenseOutputs
from detcli.structures.detections import DetectionBatch
from detcli.task.assigners.assign_result import AssignResult
from detcli.task.assigners.dynamic_soft_label import (
    DynamicSoftLabelAssigner,
    DynamicSoftLabelAssignerConfig,
)
from detcli.task.assigners.fcos_rule import PointCells
from detcli.task.coders.distance_point import DistancePointBBoxCoderConfig
from detcli.task.postprocess import DenseTestConfig
from detcli.task.prior_generators.point_generator import (
    MlvlPointGenerator,
    MlvlPointGeneratorConfig,
)
from detcli.task.train_cfg import DenseTrainConfig

ASSIGNER = "DynamicSoftLabelAssigner"


def rtmdet_points() -> MlvlPointGeneratorConfig:
    return MlvlPointGeneratorConfig(strides=[8, 16, 32], offset=0.0)


def rtmdet_loss_cls() -> QualityFocalLossConfig:
    return QualityFocalLossConfig(use_sigmoid=True, beta=2.0, loss_weight=1.0)


def rtmdet_loss_bbox() -> GIoULossConfig:
    return GIoULossConfig(loss_weight=2.0)


def rtmdet_train_cfg() -> DenseTrainConfig:
    """RTMDet's ``train_cfg``: the dynamic soft-label assigner with ``topk = 13``."""
    return DenseTrainConfig(assigner=DynamicSoftLabelAssignerConfig(topk=13))


class RTMDetSepBNHeadConfig(Schema):
    """RTMDetSepBNHead settings: MMDetection 3.3's names and class defaults (the RTMDet
    configs set ``stacked_convs = 2`` and ``with_objectness = false``)."""

    type: Literal["RTMDetSepBNHead"] = "RTMDetSepBNHead"
    num_classes: int = Field(ge=1)
    in_channels: int | None = Field(None, ge=1)  # derived from the neck; set it only to assert it
    feat_channels: int = Field(256, ge=1)
    stacked_convs: int = Field(4, ge=0)
    anchor_generator: MlvlPointGeneratorConfig = Field(default_factory=rtmdet_points)
    bbox_coder: BBoxCoderConfig = Field(default_factory=DistancePointBBoxCoderConfig)
    loss_cls: LossConfig = Field(default_factory=rtmdet_loss_cls)
    loss_bbox: LossConfig = Field(default_factory=rtmdet_loss_bbox)
    with_objectness: bool = True
    exp_on_reg: bool = False
    share_conv: bool = True
    use_depthwise: bool = False
    pred_kernel_size: int = Field(1, ge=1)
    norm_cfg: NormConfig = Field(default_factory=bn_momentum_003)
    act_cfg: ActConfig = Field(default_factory=silu_act)
    prior_prob: float = Field(0.01, gt=0, lt=1)


@HEADS.register(RTMDetSepBNHeadConfig)
class RTMDetSepBNHead(nn.Module):
    """See the module docstring; a :class:`~detcli.models.protocols.DenseHead` whose
    assigner ranks points by its predictions
    (:class:`~detcli.models.protocols.PredictionAssigningHead`)."""

    makes_proposals: ClassVar[bool] = False
    generator_key: ClassVar[str] = "anchor_generator"  # its points' config (MMDetection's name)

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        feat_channels: int = 256,
        stacked_convs: int = 4,
        strides: Sequence[int] = (8, 16, 32),
        with_objectness: bool = True,
        exp_on_reg: bool = False,
        share_conv: bool = True,
        use_depthwise: bool = False,
        pred_kernel_size: int = 1,
        norm_cfg: NormConfig | None = None,
        act_cfg: ActConfig | None = None,
        prior_prob: float = 0.01,
        bbox_coder: Any = None,
        loss_cls: nn.Module | None = None,
        loss_bbox: nn.Module | None = None,
        train_cfg: DenseTrainConfig | None = None,
        test_cfg: DenseTestConfig | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.feat_channels = feat_channels
        self.stacked_convs = stacked_convs
        if use_depthwise and share_conv and stacked_convs:
            raise ConfigError(
                "RTMDetSepBNHead: use_depthwise with share_conv is not supported (a "
                "depthwise-separable module has two convs; MMDetection 3.3 fails on it too)",
                hint="set share_conv = false, or use_depthwise = false")
        self.with_objectness = with_objectness
        self.exp_on_reg = exp_on_reg
        self.prior_prob = prior_prob
        self.prior_generator_cfg = MlvlPointGeneratorConfig(strides=list(strides), offset=0.0)
        self.prior_generator = MlvlPointGenerator(strides=strides, offset=0.0)
        self.strides = self.prior_generator.strides  # (s_w, s_h) per level
        if any(sw != sh for sw, sh in self.strides):
            raise ConfigError(f"RTMDetSepBNHead needs square strides, got {self.strides}")
        self.bbox_coder = bbox_coder or BBOX_CODERS.build(DistancePointBBoxCoderConfig())
        self.loss_cls = loss_cls or LOSSES.build(rtmdet_loss_cls())
        self.loss_bbox = loss_bbox or LOSSES.build(rtmdet_loss_bbox())
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg if test_cfg is not None else DenseTestConfig()
        self.assigner = self._build_assigner(train_cfg)
        self.register_buffer("stride_table", torch.tensor(
            [float(sw) for sw, _ in self.strides]), persistent=False)
        self._init_layers(use_depthwise, share_conv, pred_kernel_size,
                          norm_cfg or bn_momentum_003(), (act_cfg or silu_act()).type)
        self.init_weights()

    @staticmethod
    def _build_assigner(train_cfg: DenseTrainConfig | None) -> DynamicSoftLabelAssigner:
        if train_cfg is None:
            return DynamicSoftLabelAssigner()
        if train_cfg.assigner.type != ASSIGNER:
            raise ConfigError(
                f"RTMDetSepBNHead trains with a {ASSIGNER} (it ranks points by the head's own "
                f"predictions); model.train_cfg.assigner is a {train_cfg.assigner.type}",
                hint=f'set model.train_cfg.assigner = {{ type = "{ASSIGNER}", topk = 13 }}')
        if train_cfg.allowed_border >= 0:
            raise ConfigError(
                f"RTMDetSepBNHead uses every point on an image's padded area; "
                f"model.train_cfg.allowed_border = {train_cfg.allowed_border} is not "
                f"supported (use -1, as MMDetection's RTMDet configs)")
        return ASSIGNERS.build(train_cfg.assigner)

    def _init_layers(self, use_depthwise: bool, share_conv: bool, kernel: int,
                     norm_cfg: NormConfig, act: str) -> None:
        """Towers per level (convs shared with ``share_conv``) and the per-level predictors."""
        self.cls_convs, self.reg_convs = nn.ModuleList(), nn.ModuleList()
        self.rtm_cls, self.rtm_reg = nn.ModuleList(), nn.ModuleList()
        if self.with_objectness:
            self.rtm_obj = nn.ModuleList()
        for _ in self.strides:
            cls_convs, reg_convs = nn.ModuleList(), nn.ModuleList()
            for i in range(self.stacked_convs):
                chn = self.in_channels if i == 0 else self.feat_channels
                for tower in (cls_convs, reg_convs):
                    tower.append(conv_module(use_depthwise, chn, self.feat_channels, 3,
                                             padding=1, norm_cfg=norm_cfg, activation=act))
            self.cls_convs.append(cls_convs)
            self.reg_convs.append(reg_convs)
            self.rtm_cls.append(nn.Conv2d(self.feat_channels, self.num_classes, kernel,
                                          padding=kernel // 2))
            self.rtm_reg.append(nn.Conv2d(self.feat_channels, 4, kernel, padding=kernel // 2))
            if self.with_objectness:
                self.rtm_obj.append(nn.Conv2d(self.feat_channels, 1, kernel,
                                              padding=kernel // 2))
        if share_conv:  # every level's ConvModule uses level 0's conv, keeps its own norm
            for level in range(1, len(self.strides)):
                for i in range(self.stacked_convs):
                    self.cls_convs[level][i].conv = self.cls_convs[0][i].conv
                    self.reg_convs[level][i].conv = self.reg_convs[0][i].conv

    @classmethod
    def from_config(cls, cfg: RTMDetSepBNHeadConfig, *,
                    train_cfg: DenseTrainConfig | None = None,
                    test_cfg: DenseTestConfig | None = None) -> RTMDetSepBNHead:
        """Build the parts a resolved config describes; ``in_channels`` is the neck's."""
        in_channels = require_in_channels("RTMDetSepBNHead", cfg.in_channels,
                                          "neck's out_channels")
        if cfg.anchor_generator.offset != 0:
            raise ConfigError(f"RTMDetSepBNHead: anchor_generator.offset "
                              f"{cfg.anchor_generator.offset} must be 0 (RTMDet's points)")
        settings = cfg.model_dump(include={
            "num_classes", "feat_channels", "stacked_convs", "with_objectness", "exp_on_reg",
            "share_conv", "use_depthwise", "pred_kernel_size", "prior_prob"})
        return cls(**settings, in_channels=in_channels, strides=cfg.anchor_generator.strides,
                   norm_cfg=cfg.norm_cfg, act_cfg=cfg.act_cfg,
                   bbox_coder=BBOX_CODERS.build(cfg.bbox_coder),
                   loss_cls=LOSSES.build(cfg.loss_cls), loss_bbox=LOSSES.build(cfg.loss_bbox),
                   train_cfg=train_cfg, test_cfg=test_cfg)

    def init_weights(self) -> None:
        """MMDetection's init: convs N(0, 0.01), norms 1; classifier (and objectness) biases
        at ``prior_prob``."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                normal_init(m, std=0.01)
            if is_norm(m):
                constant_init(m, 1.0)
        bias = bias_init_with_prob(self.prior_prob)
        for conv in self.rtm_cls:
            normal_init(conv, std=0.01, bias=bias)
        if self.with_objectness:
            for conv in self.rtm_obj:
                normal_init(conv, std=0.01, bias=bias)

    def forward(self, feats: Sequence[Tensor]) -> DenseOutputs:
        if len(feats) != len(self.strides):
            raise DetError(f"RTMDetSepBNHead got {len(feats)} feature maps for "
                           f"{len(self.strides)} strides {self.strides}")
        cls_logits, distances = [], []
        for level, x in enumerate(feats):  # x: (N, C, H_l, W_l)
            cls_feat, reg_feat = x, x
            for layer in self.cls_convs[level]:
                cls_feat = layer(cls_feat)  # (N, F, H_l, W_l)
            logits = self.rtm_cls[level](cls_feat)  # (N, K, H_l, W_l)
            for layer in self.reg_convs[level]:
                reg_feat = layer(reg_feat)
            if self.with_objectness:
                objectness = self.rtm_obj[level](reg_feat)  # (N, 1, H_l, W_l)
                logits = inverse_sigmoid(torch.sqrt(logits.sigmoid() * objectness.sigmoid()))
            reg = self.rtm_reg[level](reg_feat)  # (N, 4, H_l, W_l)
            if self.exp_on_reg:
                reg = reg.float().exp()  # float32 before exp, so AMP cannot overflow
            distances.append(reg * self.strides[level][0])  # pixels
            cls_logits.append(logits)
        return DenseOutputs(cls_logits, distances)

    # ---- training --------------------------------------------------------------------------

    def training_rule(self) -> TrainingRule:
        """Every valid point counts (no sampler); the losses are divided by the positives'
        summed soft labels (their IoUs), MMDetection's RTMDet normaliser."""
        return TrainingRule(sampler="PseudoSampler", normaliser="positives")

    def assignment_setup(self) -> AssignmentSetup:
        """The points as stride-sized cells and the dynamic soft-label assigner."""
        return AssignmentSetup(prior_boxes=PointCells(self.prior_generator),
                               assigner=self.assigner, generator_key=self.generator_key,
                               generator_cfg=self.prior_generator_cfg,
                               assigner_cfg=self.assigner.config())

    def _flat(self, outputs: DenseOutputs) -> tuple[list[Tensor], Tensor, Tensor, Tensor]:
        """-> (points per level L x (R_l, 4) with strides, logits (N, R, K), distances
        (N, R, 4) float32, decoded boxes (N, R, 4))."""
        channels = (outputs.cls_logits[0].shape[1], outputs.bbox_deltas[0].shape[1])
        if channels != (self.num_classes, 4):
            raise DetError(
                f"RTMDetSepBNHead assigns with the {ASSIGNER}, which ranks points by the "
                f"head's own predictions: it needs outputs with {self.num_classes} class and 4 "
                f"distance channels, got {channels[0]} and {channels[1]} (stand-in outputs "
                "of an untrained model cannot show it)",
                hint="the dynamic assignment needs a trained model's outputs")
        sizes = [(x.shape[-2], x.shape[-1]) for x in outputs.cls_logits]
        points_per_level = self.prior_generator.grid_priors(
            sizes, device=outputs.cls_logits[0].device, with_stride=True)  # L x (R_l, 4)
        points = torch.cat(points_per_level, dim=0)  # (R, 4): x, y, s_w, s_h
        logits = flatten_levels(outputs.cls_logits, self.num_classes)  # (N, R, K)
        distances = flatten_levels(outputs.bbox_deltas, 4).float()  # (N, R, 4)
        return points_per_level, logits, distances, self.bbox_coder.decode(points, distances)

    def predicted_priors(self, outputs: DenseOutputs, images: ImageBatch) -> PredictedPriors:
        """What the assigner ranks: points (R, 4) with strides, valid (N, R), logits (N, R, K)
        and decoded boxes (N, R, 4) (a :class:`PredictionAssigningHead`)."""
        points_per_level, logits, _, boxes = self._flat(outputs)
        return PredictedPriors(torch.cat(points_per_level, dim=0), self._valid(outputs, images),
                               logits, boxes)

    def outputs_from_predictions(self, pred_boxes: Tensor, pred_logits: Tensor,
                                 featmap_sizes: Sequence[tuple[int, int]]) -> DenseOutputs:
        """Decoded boxes (N, R, 4) and logits (N, R, K) -> the outputs whose
        :meth:`predicted_priors` they are: L x (N, K, H_l, W_l) logits and L x (N, 4, H_l,
        W_l) distances in pixels (the coder's encoding; the inverse of :meth:`_flat`)."""
        device = pred_boxes.device
        points = torch.cat(self.prior_generator.grid_priors(
            featmap_sizes, device=device, with_stride=True), dim=0)  # (R, 4)
        distances = self.bbox_coder.encode(points, pred_boxes)  # (N, R, 4)
        counts = [int(h) * int(w) for h, w in featmap_sizes]

        def per_level(flat: Tensor) -> list[Tensor]:  # (N, R, C) -> L x (N, C, H_l, W_l)
            return [chunk.reshape(chunk.shape[0], h, w, -1).permute(0, 3, 1, 2)
                    for chunk, (h, w) in zip(flat.split(counts, dim=1), featmap_sizes)]

        return DenseOutputs(per_level(pred_logits), per_level(distances))

    def assign(self, outputs: DenseOutputs, images: ImageBatch,
               targets: DetTargets) -> tuple[AssignResult, PredictedPriors]:
        """The loss's assignment -> (result, what it ranked)."""
        pred = self.predicted_priors(outputs, images)
        result = self.assigner.assign(pred.points, targets.boxes.to(pred.boxes), targets.labels,
                                      pred_boxes=pred.boxes.detach(),
                                      pred_logits=pred.logits.detach(), prior_valid=pred.valid)
        return result, pred

    def _valid(self, outputs: DenseOutputs, images: ImageBatch) -> Tensor:
        """(N, R) bool valid flags for the feature-map sizes of ``outputs``."""
        device = outputs.cls_logits[0].device
        num_images = outputs.cls_logits[0].shape[0]
        sizes = [(x.shape[-2], x.shape[-1]) for x in outputs.cls_logits]
        if images.fills_batch:  # host data: every point counts, no device work
            return torch.ones(num_images, sum(h * w for h, w in sizes), dtype=torch.bool,
                              device=device)
        return torch.cat(self.prior_generator.valid_flags(sizes, images.pad_shapes.to(device)),
                         dim=1)  # (N, R)

    def loss(self, outputs: DenseOutputs, images: ImageBatch,
             targets: DetTargets) -> dict[str, Tensor]:
        """``{"loss_cls", "loss_bbox"}`` (module docstring)."""
        result, pred = self.assign(outputs, images, targets)
        valid, logits, boxes = pred.valid, pred.logits, pred.boxes
        positive = result.pos_mask  # (N, R)
        quality = torch.where(positive, result.max_iou, 0.0)  # (N, R): the soft labels
        classes = torch.arange(self.num_classes, device=logits.device)  # (K,)
        soft = (result.labels[..., None] == classes).float() * quality[..., None]  # (N, R, K)
        weights = valid.float()  # (N, R): every valid point, positive or negative
        if self.train_cfg is not None and self.train_cfg.pos_weight > 0:
            weights = torch.where(positive, self.train_cfg.pos_weight, weights)
        # the batch's summed soft labels, averaged over DDP ranks (MMDetection's reduce_mean)
        normaliser = mean_over_ranks(quality.sum()).clamp(min=1)  # (): no host sync
        loss_cls = self.loss_cls(logits.reshape(-1, self.num_classes),
                                 soft.reshape(-1, self.num_classes),
                                 weight=weights.reshape(-1), avg_factor=normaliser)
        # off positives, prediction and target are one stand-in box: zero loss, no NaN
        gt = targets.boxes.to(boxes)  # (N, G, 4)
        gt_boxes = result.matched_gt(gt) if gt.shape[1] else torch.zeros_like(boxes)  # (N, R, 4)
        stand_in = torch.cat([torch.zeros_like(boxes[..., :2]),
                              torch.ones_like(boxes[..., 2:])], dim=-1)  # (N, R, 4)
        pred = torch.where(positive[..., None], boxes, stand_in)
        target = torch.where(positive[..., None], gt_boxes, stand_in)
        loss_bbox = self.loss_bbox(pred.reshape(-1, 4), target.reshape(-1, 4),
                                   weight=quality.reshape(-1), avg_factor=normaliser)
        return {"loss_cls": loss_cls, "loss_bbox": loss_bbox}

    @torch.no_grad()
    def explain_assignment(self, outputs: DenseOutputs, images: ImageBatch,
                           targets: DetTargets,
                           generator: torch.Generator | None = None) -> Assignment:
        """What :meth:`loss` assigns, point by point (no sampler; ``generator`` is not used).
        Priors are the points' stride-sized cells; ``max_iou`` is each positive's soft label
        (its predicted box's IoU with its GT)."""
        result, pred = self.assign(outputs, images, targets)
        points = pred.points
        sizes = [(x.shape[-2], x.shape[-1]) for x in outputs.cls_logits]
        level = torch.cat([torch.full((h * w,), i, dtype=torch.long, device=points.device)
                           for i, (h, w) in enumerate(sizes)])  # (R,)
        cells = torch.cat([points[:, :2] - points[:, 2:] / 2,
                           points[:, :2] + points[:, 2:] / 2], dim=-1)  # (R, 4)
        positive = result.pos_mask
        return build_assignment(cells, level, targets.boxes.to(cells), result.gt_index,
                                result.labels, result.max_iou, positive, result.neg_mask)

    # ---- inference -------------------------------------------------------------------------

    def level_priors(self, outputs: DenseOutputs) -> list[Tensor]:
        """Points per level, L x (H_l*W_l, 2), for the feature-map sizes of ``outputs``."""
        sizes = [(x.shape[-2], x.shape[-1]) for x in outputs.cls_logits]
        return self.prior_generator.grid_priors(sizes, device=outputs.cls_logits[0].device)

    def candidates(self, outputs: DenseOutputs, img_shapes: Tensor | None,
                   priors: Sequence[Tensor] | None = None,
                   static_k: bool = False) -> Candidates:
        """Boxes before NMS (N, P) decoded from the points, clipped to ``img_shapes`` (N, 2)
        unless None."""
        if priors is None:
            priors = self.level_priors(outputs)
        return dense_candidates(outputs, priors, self.bbox_coder, self.test_cfg,
                                max_shape=clip_shapes(img_shapes, outputs.cls_logits[0]),
                                static_k=static_k)

    def predict(self, outputs: DenseOutputs, images: ImageBatch,
                rescale: bool = True) -> DetectionBatch:
        """Detections of every image, padded to ``test_cfg.max_per_img``: candidates and one
        batched NMS (boxes in original-image pixels with ``rescale``)."""
        return predict_dense(self.candidates(outputs, images.img_shapes), images,
                             self.test_cfg, rescale=rescale)


__all__ = ["RTMDetSepBNHead", "RTMDetSepBNHeadConfig", "rtmdet_train_cfg"]
