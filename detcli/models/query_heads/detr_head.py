"""DETR's head: a class and a box per decoder query, a set loss over a one-to-one matching,
top-k post-processing without NMS (MMDetection 3.3's ``DETRHead``, its names and semantics).

L decoder layers, N images, Q queries, D = ``embed_dims``, K classes, C classifier outputs
(K + 1 softmax logits with background last; K with a sigmoid ``loss_cls``), G GT slots, M
``max_per_img``.

forward: hidden states (L, N, Q, D) -> ``fc_cls`` logits (L, N, Q, C) and boxes
    ``sigmoid(fc_reg(relu(reg_ffn(h))))`` (L, N, Q, 4), (cx, cy, w, h) normalised by the
    image's own size (``img_shapes``, not the padded batch's).

loss: every layer's queries are matched to the GT by the ``HungarianAssigner`` -- all L x N
    problems in one call, one device -> host transfer -- and each layer gets

    - ``loss_cls``: the classifier on every query, matched ones towards their GT's class, the
      rest towards background; softmax cross-entropy with class weight 1 and
      ``bg_cls_weight`` on the background class, divided by
      ``num_matched + bg_cls_weight * num_unmatched`` over the batch (at least 1; averaged
      over ranks with ``sync_cls_avg_factor``);
    - ``loss_bbox``: L1 between the matched queries' normalised (cx, cy, w, h) and their GT's,
    - ``loss_iou``: GIoU loss of the same pairs in pixels,

    both divided by the number of GT boxes matched across the batch -- under DDP the mean over
    ranks (an all-reduce, as MMDetection's ``reduce_mean``), at least 1. The last layer's terms
    are ``loss_cls``, ``loss_bbox``, ``loss_iou``; layer i < L - 1 gives ``d{i}.loss_cls``, ...
    (MMDetection's auxiliary-loss keys; the engine sums every key that contains ``loss``).

predict: the last layer only; softmax: each query's best foreground class and its probability,
    the top M queries by it; sigmoid: the top M (query, class) pairs. Boxes to pixels, clipped
    to the image, divided by the scale factors with ``rescale``. No NMS and no score threshold:
    every image gets M detections.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Union

import torch
import torch.distributed as dist
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from detcli.config.schema import Schema
from detcli.errors import ConfigError
from detcli.models.losses.cross_entropy_loss import CrossEntropyLossConfig
from detcli.models.losses.focal_loss import FocalLossConfig
from detcli.models.losses.regression_losses import GIoULossConfig, L1LossConfig
from detcli.models.transformer.attention import FFN
from detcli.ops.boxes import cxcywh_to_xyxy, xyxy_to_cxcywh
from detcli.registry import ASSIGNERS, HEADS, LOSSES, AssignerConfig, LossConfig
from detcli.structures.batch import DetTargets, ImageBatch
from detcli.structures.dense import Candidates
from detcli.structures.detections import DetectionBatch
from detcli.structures.queries import QueryOutputs
from detcli.task.assigners.assign_result import AssignResult
from detcli.task.assigners.hungarian import HungarianAssignerConfig, HungarianMatch

ClassLossConfig = Union[CrossEntropyLossConfig, FocalLossConfig]


def detr_cls_loss() -> CrossEntropyLossConfig:
    return CrossEntropyLossConfig(use_sigmoid=False, loss_weight=1.0)


def detr_l1_loss() -> L1LossConfig:
    return L1LossConfig(loss_weight=5.0)


def detr_giou_loss() -> GIoULossConfig:
    return GIoULossConfig(loss_weight=2.0)


class DETRTrainConfig(Schema):
    """DETR's ``train_cfg``: the one-to-one assigner (no sampler: every query takes part)."""

    assigner: AssignerConfig = Field(default_factory=HungarianAssignerConfig)


class DETRTestConfig(Schema):
    """DETR's ``test_cfg``: detections kept per image (top-k, no NMS, no threshold)."""

    max_per_img: int = Field(100, ge=1)


class DETRHeadConfig(Schema):
    """DETRHead settings. ``embed_dims`` is derived from the decoder; set it only to assert it.

    ``bg_cls_weight`` is MMDetection's ``loss_cls.bg_cls_weight`` (the background class's
    weight in the softmax loss and in its normaliser), a head setting here because det's
    ``CrossEntropyLoss`` takes per-class weights only; with ``loss_cls.class_weight`` unset the
    classes weigh 1 and the background ``bg_cls_weight``."""

    type: Literal["DETRHead"] = "DETRHead"
    num_classes: int = Field(ge=1)
    embed_dims: int | None = Field(None, ge=1)
    num_reg_fcs: int = Field(2, ge=2)
    sync_cls_avg_factor: bool = False
    bg_cls_weight: float = Field(0.1, ge=0)
    loss_cls: ClassLossConfig = Field(default_factory=detr_cls_loss, discriminator="type")
    loss_bbox: LossConfig = Field(default_factory=detr_l1_loss)
    loss_iou: LossConfig = Field(default_factory=detr_giou_loss)


def build_cls_loss(cfg: ClassLossConfig, num_classes: int, bg_cls_weight: float) -> nn.Module:
    """The classification loss; a softmax one without ``class_weight`` gets MMDetection's
    DETR weights: 1 for each of the K classes, ``bg_cls_weight`` for the background."""
    if not cfg.use_sigmoid and cfg.class_weight is None:
        cfg = cfg.model_copy(update={"class_weight": [1.0] * num_classes + [bg_cls_weight]})
    return LOSSES.build(cfg)


def mean_over_ranks(value: Tensor) -> Tensor:
    """MMDetection's ``reduce_mean``: the mean of ``value`` over the DDP ranks (itself when
    not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    value = value.clone()
    dist.all_reduce(value.div_(dist.get_world_size()))
    return value


@HEADS.register(DETRHeadConfig)
class DETRHead(nn.Module):
    """Classes and boxes of DETR's queries; set loss and top-k predictions (module docstring)."""

    makes_proposals: ClassVar[bool] = False  # registered with the heads; no proposals

    def __init__(self, *, num_classes: int, embed_dims: int, num_reg_fcs: int = 2,
                 sync_cls_avg_factor: bool = False, bg_cls_weight: float = 0.1,
                 loss_cls: nn.Module | None = None, loss_bbox: nn.Module | None = None,
                 loss_iou: nn.Module | None = None, assigner: Any = None,
                 test_cfg: DETRTestConfig | None = None) -> None:
        """Parts not given are built from the config's defaults: the softmax loss with class
        weights 1 and ``bg_cls_weight``, L1 (5), GIoU (2), DETR's Hungarian costs."""
        super().__init__()
        self.num_classes = num_classes
        self.embed_dims = embed_dims
        self.loss_cls = loss_cls or build_cls_loss(detr_cls_loss(), num_classes, bg_cls_weight)
        self.loss_bbox = loss_bbox or LOSSES.build(detr_l1_loss())
        self.loss_iou = loss_iou or LOSSES.build(detr_giou_loss())
        self.use_sigmoid = bool(self.loss_cls.use_sigmoid)
        self.bg_cls_weight = 0.0 if self.use_sigmoid else bg_cls_weight
        self.sync_cls_avg_factor = sync_cls_avg_factor
        self.cls_out_channels = num_classes if self.use_sigmoid else num_classes + 1
        self.assigner = assigner or ASSIGNERS.build(HungarianAssignerConfig())
        self.test_cfg = test_cfg or DETRTestConfig()
        self._init_layers(num_reg_fcs)

    def _init_layers(self, num_reg_fcs: int) -> None:
        """The prediction layers (MMDetection's hook, which DeformableDETRHead overrides):
        ``fc_cls`` and the box branch ``reg_ffn`` -> ``fc_reg``."""
        self.fc_cls = nn.Linear(self.embed_dims, self.cls_out_channels)
        self.activate = nn.ReLU()
        self.reg_ffn = FFN(embed_dims=self.embed_dims, feedforward_channels=self.embed_dims,
                           num_fcs=num_reg_fcs, add_identity=False)
        self.fc_reg = nn.Linear(self.embed_dims, 4)

    @classmethod
    def from_config(cls, cfg: DETRHeadConfig, *, train_cfg: DETRTrainConfig | None = None,
                    test_cfg: DETRTestConfig | None = None) -> DETRHead:
        """The losses (the softmax one with its class weights), the assigner of ``train_cfg``
        and the post-processing of ``test_cfg``; ``embed_dims`` is the decoder's."""
        if cfg.embed_dims is None:
            raise ConfigError("DETRHead needs embed_dims: a DETR config derives it from the "
                              "decoder; set embed_dims to build the head on its own")
        train_cfg = train_cfg or DETRTrainConfig()
        return cls(num_classes=cfg.num_classes, embed_dims=cfg.embed_dims,
                   num_reg_fcs=cfg.num_reg_fcs, sync_cls_avg_factor=cfg.sync_cls_avg_factor,
                   bg_cls_weight=cfg.bg_cls_weight,
                   loss_cls=build_cls_loss(cfg.loss_cls, cfg.num_classes, cfg.bg_cls_weight),
                   loss_bbox=LOSSES.build(cfg.loss_bbox), loss_iou=LOSSES.build(cfg.loss_iou),
                   assigner=ASSIGNERS.build(train_cfg.assigner), test_cfg=test_cfg)

    def forward(self, hidden_states: Tensor) -> QueryOutputs:
        """(L, N, Q, D) decoder outputs -> logits (L, N, Q, C) and normalised boxes."""
        cls_logits = self.fc_cls(hidden_states)
        boxes = self.fc_reg(self.activate(self.reg_ffn(hidden_states))).sigmoid()
        return QueryOutputs(cls_logits, boxes)

    # ---- training -------------------------------------------------------------------------

    @staticmethod
    def _size_factors(img_shapes: Tensor) -> Tensor:
        """(N, 2) (h, w) -> (N, 1, 4) (w, h, w, h) float."""
        return img_shapes.flip(-1).repeat(1, 2).float()[:, None, :]

    def match(self, outputs: QueryOutputs, images: ImageBatch,
              targets: DetTargets) -> HungarianMatch:
        """Every layer's queries matched to the GT: one assigner call on the L x N problems
        (layer-major: problem ``l * N + n``), one device -> host transfer."""
        num_layers, num_images = outputs.boxes.shape[:2]
        factors = self._size_factors(images.img_shapes)  # (N, 1, 4)
        boxes_px = cxcywh_to_xyxy(outputs.boxes) * factors  # (L, N, Q, 4)
        repeat = (num_layers, 1, 1)
        return self.assigner.match(
            outputs.cls_logits.flatten(0, 1), boxes_px.flatten(0, 1),
            targets.boxes.repeat(repeat), targets.labels.repeat(num_layers, 1),
            images.img_shapes.repeat(num_layers, 1))

    def loss(self, outputs: QueryOutputs, images: ImageBatch,
             targets: DetTargets) -> dict[str, Tensor]:
        """The set loss of every decoder layer (module docstring)."""
        return named_by_layer(self.layer_losses(outputs, images, targets))

    def layer_losses(self, outputs: QueryOutputs, images: ImageBatch,
                     targets: DetTargets) -> list[dict[str, Tensor]]:
        """Each layer's ``loss_cls``, ``loss_bbox``, ``loss_iou`` under its own matching (one
        assigner call for all layers)."""
        num_layers, num_images = outputs.boxes.shape[:2]
        matching = self.match(outputs, images, targets)
        per_layer = []
        for layer in range(num_layers):
            part = slice(layer * num_images, (layer + 1) * num_images)
            result = _rows(matching.result, part)
            num_matched = sum(matching.num_matched[part])
            per_layer.append(self._layer_loss(outputs.cls_logits[layer], outputs.boxes[layer],
                                              result, num_matched, images, targets))
        return per_layer

    def _layer_loss(self, cls_logits: Tensor, boxes: Tensor, result: AssignResult,
                    num_matched: int, images: ImageBatch,
                    targets: DetTargets) -> dict[str, Tensor]:
        """One layer's three terms: logits (N, Q, C), boxes (N, Q, 4) normalised, its
        assignment (N, Q) and matched count (host)."""
        num_images, num_queries = boxes.shape[:2]
        cls_avg = self._cls_avg_factor(num_matched, num_images * num_queries - num_matched,
                                       cls_logits)
        return self.set_loss_terms(cls_logits, boxes, result, cls_avg,
                                   self._num_pos(num_matched, cls_logits), images, targets)

    def _cls_avg_factor(self, num_pos: int | Tensor, num_neg: int | Tensor,
                        like: Tensor) -> float | Tensor:
        """The classification loss's normaliser ``num_pos + bg_cls_weight * num_neg`` (host
        counts or device ones), averaged over DDP ranks with ``sync_cls_avg_factor``, at
        least 1."""
        cls_avg = num_pos + num_neg * self.bg_cls_weight
        if isinstance(cls_avg, Tensor) or self.sync_cls_avg_factor:
            count = _count_tensor(cls_avg, like)
            if self.sync_cls_avg_factor:
                count = mean_over_ranks(count)
            return count.clamp(min=1)[0]
        return max(cls_avg, 1.0)

    def set_loss_terms(self, cls_logits: Tensor, boxes: Tensor, result: AssignResult,
                       cls_avg: float | Tensor, num_pos: float | Tensor, images: ImageBatch,
                       targets: DetTargets) -> dict[str, Tensor]:
        """``loss_cls``, ``loss_bbox``, ``loss_iou`` of queries with logits (N, Q, C) and
        normalised boxes (N, Q, 4) under a fixed assignment (N, Q): the classifier on every
        query (the assigned towards their GT's class, the rest towards background, weight 1
        each), divided by ``cls_avg``; L1 and GIoU on the assigned pairs, by ``num_pos``."""
        matched = result.pos_mask  # (N, Q)
        labels = torch.where(matched, result.labels, self.num_classes).flatten()  # (N*Q,)
        loss_cls = self.loss_cls(cls_logits.reshape(-1, self.cls_out_channels), labels,
                                 torch.ones_like(labels, dtype=cls_logits.dtype),
                                 avg_factor=cls_avg)
        factors = self._size_factors(images.img_shapes)  # (N, 1, 4)
        matched_gt = result.matched_gt(targets.boxes) if targets.boxes.shape[1] \
            else boxes.new_zeros(boxes.shape)  # (N, Q, 4) pixels, zero off the matched
        gt_norm = xyxy_to_cxcywh(matched_gt / factors)  # (N, Q, 4)
        weights = matched[..., None].expand(-1, -1, 4).to(boxes.dtype).reshape(-1, 4)
        loss_bbox = self.loss_bbox(boxes.reshape(-1, 4), gt_norm.reshape(-1, 4), weights,
                                   avg_factor=num_pos)
        pred_px = (cxcywh_to_xyxy(boxes) * factors).reshape(-1, 4)
        gt_px = (cxcywh_to_xyxy(gt_norm) * factors).reshape(-1, 4)
        loss_iou = self.loss_iou(pred_px, gt_px, weights, avg_factor=num_pos)
        return {"loss_cls": loss_cls, "loss_bbox": loss_bbox, "loss_iou": loss_iou}

    @staticmethod
    def _num_pos(num_matched: int | Tensor, like: Tensor) -> float | Tensor:
        """The box losses' normaliser: the matched GT of the batch (a host count or a device
        one), averaged over DDP ranks (a device tensor then: no host read), at least 1."""
        distributed = dist.is_available() and dist.is_initialized()
        if not distributed and not isinstance(num_matched, Tensor):
            return float(max(num_matched, 1))
        return mean_over_ranks(_count_tensor(num_matched, like)).clamp(min=1)[0]

    # ---- inference ------------------------------------------------------------------------

    def _top_k(self, outputs: QueryOutputs) -> tuple[Tensor, Tensor, Tensor]:
        """Last layer -> scores (N, M), labels (N, M), normalised boxes (N, M, 4)."""
        cls_logits, boxes = outputs.cls_logits[-1], outputs.boxes[-1]  # (N, Q, C), (N, Q, 4)
        num_queries = cls_logits.shape[1]
        if self.use_sigmoid:
            k = min(self.test_cfg.max_per_img, num_queries * self.num_classes)
            scores, index = cls_logits.sigmoid().flatten(1).topk(k, dim=1)  # (N, M)
            labels = index % self.num_classes
            query = torch.div(index, self.num_classes, rounding_mode="floor")
        else:
            k = min(self.test_cfg.max_per_img, num_queries)
            best, best_label = F.softmax(cls_logits, dim=-1)[..., :-1].max(-1)  # (N, Q)
            scores, query = best.topk(k, dim=1)  # (N, M)
            labels = best_label.gather(1, query)
        picked = boxes.gather(1, query[..., None].expand(-1, -1, 4))  # (N, M, 4)
        return scores, labels, picked

    def candidates(self, outputs: QueryOutputs, img_shapes: Tensor) -> Candidates:
        """The top-k detections in network-input pixels, clipped to ``img_shapes`` (N, 2); all
        valid (DETR has no score threshold)."""
        scores, labels, boxes = self._top_k(outputs)
        factors = self._size_factors(img_shapes).to(boxes.dtype)  # (N, 1, 4)
        px = cxcywh_to_xyxy(boxes) * factors
        px = torch.minimum(px.clamp(min=0), factors)  # x in [0, w], y in [0, h]
        return Candidates(px, scores, labels, torch.ones_like(scores, dtype=torch.bool))

    def predict(self, outputs: QueryOutputs, images: ImageBatch,
                rescale: bool = True) -> DetectionBatch:
        """Top-k detections (N, M), in original-image pixels with ``rescale``."""
        cand = self.candidates(outputs, images.img_shapes)
        boxes = cand.boxes
        if rescale:
            boxes = boxes / images.scale_factors.to(boxes)[:, None, :]
        num = boxes.shape[0]
        num_dets = torch.full((num,), boxes.shape[1], dtype=torch.long, device=boxes.device)
        return DetectionBatch(boxes=boxes, scores=cand.scores, labels=cand.labels,
                              num_dets=num_dets)


def _count_tensor(count: float | Tensor, like: Tensor) -> Tensor:
    """A count (host number or device tensor) as a (1,) float tensor on ``like``'s device."""
    if isinstance(count, Tensor):
        return count.float().reshape(1)
    return torch.full((1,), float(count), device=like.device)


def _rows(result: AssignResult, part: slice) -> AssignResult:
    """The problems ``part`` of a stacked assignment."""
    return AssignResult(gt_index=result.gt_index[part], max_iou=result.max_iou[part],
                        labels=result.labels[part], num_gts=result.num_gts[part])


def named_by_layer(per_layer: list[dict[str, Tensor]], tag: str = "") -> dict[str, Tensor]:
    """MMDetection's keys and order: the last layer's terms as ``{tag}loss_*``, then layer i's
    as ``d{i}.{tag}loss_*`` (``tag``: e.g. ``dn_`` for DINO's denoising terms)."""
    *earlier, last = per_layer
    losses = {f"{tag}{name}": value for name, value in last.items()}
    for layer, terms in enumerate(earlier):
        losses.update({f"d{layer}.{tag}{name}": value for name, value in terms.items()})
    return losses
