"""Faster R-CNN's RoI box head: two shared fully connected layers, then a classifier and a
box regressor (MMDetection 2.x's ``Shared2FCBBoxHead``).

R RoIs (of the whole batch), C input channels, S x S the pooled RoI size (``roi_feat_size``),
F ``fc_out_channels``, K foreground classes; N images and P RoIs per image where the RoIs come
per image.

Layers (MMDetection's names, so its checkpoints load with no key mapping)::

    (R, C, S, S) -flatten-> (R, C*S*S) -shared_fcs.0, ReLU-> (R, F) -shared_fcs.1, ReLU-> (R, F)
    fc_cls: (R, F) -> (R, K + 1) softmax logits, background last
    fc_reg: (R, F) -> (R, 4K) deltas per class, or (R, 4) with ``reg_class_agnostic``

Target codes (as :mod:`detcli.models.dense_heads.anchor_head`): ``labels`` in [0, K) for
positive RoIs and ``K`` (background) for negatives; ``label_weights`` 0 on RoIs that count for
nothing (padding slots). Box targets are the matched GT encoded against the RoI by
``bbox_coder`` (with ``target_stds`` (0.1, 0.1, 0.2, 0.2) by default), or the GT box itself
with ``reg_decoded_bbox``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor, nn

from detcli.config.schema import Schema
from detcli.models.channels import require_in_channels
from detcli.models.layers import normal_init, xavier_init
from detcli.models.losses import CrossEntropyLossConfig, L1LossConfig
from detcli.registry import (
    BBOX_CODERS,
    BBOX_HEADS,
    LOSSES,
    BBoxCoderConfig,
    LossConfig,
)
from detcli.task.coders.delta_xywh import DeltaXYWHBBoxCoderConfig

SOFTMAX_ONLY = ("Shared2FCBBoxHead classifies with K + 1 softmax logits (background last); its "
                "loss_cls must be a softmax loss (CrossEntropyLoss with use_sigmoid = false), got "
                "{name} with use_sigmoid = true")


def rcnn_bbox_coder() -> DeltaXYWHBBoxCoderConfig:
    """R-CNN's deltas: means 0, stds (0.1, 0.1, 0.2, 0.2) so targets have about unit scale."""
    return DeltaXYWHBBoxCoderConfig(target_means=[0.0, 0.0, 0.0, 0.0],
                                    target_stds=[0.1, 0.1, 0.2, 0.2])


def rcnn_loss_cls() -> CrossEntropyLossConfig:
    return CrossEntropyLossConfig(use_sigmoid=False, loss_weight=1.0)


class Shared2FCBBoxHeadConfig(Schema):
    """Shared2FCBBoxHead settings (MMDetection 2.x names and defaults)."""

    type: Literal["Shared2FCBBoxHead"] = "Shared2FCBBoxHead"
    num_classes: int = Field(ge=1)
    in_channels: int | None = Field(None, ge=1)  # derived from the RoI extractor; set to assert
    fc_out_channels: int = Field(1024, ge=1)
    roi_feat_size: int = Field(7, ge=1)  # must equal the extractor's roi_layer.output_size
    bbox_coder: BBoxCoderConfig = Field(default_factory=rcnn_bbox_coder)
    reg_class_agnostic: bool = False  # one box per RoI instead of one per class
    reg_decoded_bbox: bool = False  # true: loss_bbox compares decoded boxes (GIoU), not deltas
    loss_cls: LossConfig = Field(default_factory=rcnn_loss_cls)
    loss_bbox: LossConfig = Field(default_factory=L1LossConfig)

    @field_validator("loss_cls")
    @classmethod
    def _softmax_loss(cls, value: Schema) -> Schema:
        if getattr(value, "use_sigmoid", False):
            raise ValueError(SOFTMAX_ONLY.format(name=getattr(value, "type", "the loss")))
        return value


@BBOX_HEADS.register(Shared2FCBBoxHeadConfig)
class Shared2FCBBoxHead(nn.Module):
    """``forward(roi_feats)``: (R, C, S, S) -> (cls_score (R, K + 1), bbox_pred (R, 4K or 4))."""

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        roi_feat_size: int = 7,
        fc_out_channels: int = 1024,
        bbox_coder: Any = None,
        reg_class_agnostic: bool = False,
        reg_decoded_bbox: bool = False,
        loss_cls: nn.Module | None = None,
        loss_bbox: nn.Module | None = None,
    ) -> None:
        super().__init__()
        loss_cls = loss_cls or LOSSES.build(rcnn_loss_cls())
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.roi_feat_size = roi_feat_size
        self.fc_out_channels = fc_out_channels
        self.bbox_coder = bbox_coder or BBOX_CODERS.build(rcnn_bbox_coder())
        self.reg_class_agnostic = reg_class_agnostic
        self.reg_decoded_bbox = reg_decoded_bbox
        self.loss_cls = loss_cls
        self.loss_bbox = loss_bbox or LOSSES.build(L1LossConfig())
        flat = in_channels * roi_feat_size * roi_feat_size
        self.shared_fcs = nn.ModuleList([nn.Linear(flat, fc_out_channels),
                                         nn.Linear(fc_out_channels, fc_out_channels)])
        self.fc_cls = nn.Linear(fc_out_channels, num_classes + 1)
        self.fc_reg = nn.Linear(fc_out_channels, 4 if reg_class_agnostic else 4 * num_classes)
        self.init_weights()

    @classmethod
    def from_config(cls, cfg: Shared2FCBBoxHeadConfig) -> Shared2FCBBoxHead:
        """Build the coder and losses a resolved config describes; ``in_channels`` is the
        extractor's, connected when the detector's config resolved."""
        return cls(
            num_classes=cfg.num_classes,
            in_channels=require_in_channels("Shared2FCBBoxHead", cfg.in_channels,
                                            "RoI extractor's out_channels (the neck's channels)"),
            roi_feat_size=cfg.roi_feat_size,
            fc_out_channels=cfg.fc_out_channels,
            bbox_coder=BBOX_CODERS.build(cfg.bbox_coder),
            reg_class_agnostic=cfg.reg_class_agnostic,
            reg_decoded_bbox=cfg.reg_decoded_bbox,
            loss_cls=LOSSES.build(cfg.loss_cls),
            loss_bbox=LOSSES.build(cfg.loss_bbox),
        )

    def init_weights(self) -> None:
        """MMDetection's init: shared fcs Xavier-uniform, fc_cls N(0, 0.01), fc_reg N(0, 0.001),
        every bias 0."""
        for fc in self.shared_fcs:
            xavier_init(fc, distribution="uniform")
        normal_init(self.fc_cls, std=0.01)
        normal_init(self.fc_reg, std=0.001)

    def forward(self, roi_feats: Tensor) -> tuple[Tensor, Tensor]:
        x = roi_feats.flatten(1)  # (R, C*S*S)
        for fc in self.shared_fcs:
            x = F.relu(fc(x))  # (R, F)
        return self.fc_cls(x), self.fc_reg(x)  # (R, K + 1), (R, 4K or 4)

    # ---- training --------------------------------------------------------------------------

    def class_deltas(self, bbox_pred: Tensor, labels: Tensor) -> Tensor:
        """The 4 outputs of each RoI's class: (R, 4K or 4), labels (R,) -> (R, 4).

        Labels outside [0, K) (background) read class K - 1's outputs; callers weigh them 0.
        """
        if self.reg_class_agnostic:
            return bbox_pred
        per_class = bbox_pred.view(bbox_pred.shape[0], self.num_classes, 4)  # (R, K, 4)
        index = labels.clamp(min=0, max=self.num_classes - 1)  # (R,)
        index = index[:, None, None].expand(-1, 1, 4)  # (R, 1, 4)
        return torch.gather(per_class, 1, index).squeeze(1)  # (R, 4)

    def loss(
        self,
        cls_score: Tensor,
        bbox_pred: Tensor,
        rois: Tensor,
        labels: Tensor,
        label_weights: Tensor,
        bbox_targets: Tensor,
        bbox_weights: Tensor,
        avg_factor_bbox: float | Tensor | None = None,
    ) -> dict[str, Tensor]:
        """MMDetection 2.x ``BBoxHead.loss`` -> ``{"loss_cls", "loss_bbox", "acc"}``.

        cls_score (R, K + 1), bbox_pred (R, 4K or 4), rois (R, 4) boxes, labels (R,) in [0, K],
        label_weights (R,), bbox_targets (R, 4), bbox_weights (R,). ``loss_cls`` is averaged
        over the RoIs with a label weight > 0, ``loss_bbox`` over ``avg_factor_bbox`` (the
        sampled RoIs of the batch; default R). ``acc`` is the percentage of RoIs with a label
        weight > 0 whose argmax class is right (a metric, no gradient). Nothing here syncs
        with the host.
        """
        counted = label_weights > 0  # (R,)
        num_counted = counted.sum().clamp(min=1).float()  # () stays on the device
        loss_cls = self.loss_cls(cls_score, labels, label_weights, avg_factor=num_counted)

        pos = (labels >= 0) & (labels < self.num_classes)  # (R,)
        pred = self.class_deltas(bbox_pred, labels).float()  # (R, 4)
        if self.reg_decoded_bbox:  # e.g. GIoU: the loss compares boxes, not deltas
            pred = self.bbox_coder.decode(rois, pred)  # (R, 4)
        # non-positive rows compare the target with itself: zero loss and gradient, whatever
        # the outputs there (padding RoIs may hold anything)
        pred = torch.where(pos[:, None], pred, bbox_targets.to(pred))  # (R, 4)
        if avg_factor_bbox is None:
            avg_factor_bbox = float(bbox_targets.shape[0])
        loss_bbox = self.loss_bbox(pred, bbox_targets, bbox_weights * pos,
                                   avg_factor=avg_factor_bbox)

        with torch.no_grad():
            correct = (cls_score.argmax(dim=1) == labels) & counted  # (R,)
            acc = correct.sum().float() * 100.0 / num_counted
        return {"loss_cls": loss_cls, "loss_bbox": loss_bbox, "acc": acc}

    # ---- inference -------------------------------------------------------------------------

    def predict_boxes(self, rois: Tensor, cls_score: Tensor, bbox_pred: Tensor,
                      img_shapes: Tensor | None) -> tuple[Tensor, Tensor]:
        """Per-class boxes and scores of every RoI.

        rois (N, P, 4), cls_score (N, P, K + 1), bbox_pred (N, P, 4K or 4), img_shapes (N, 2)
        of (h, w) -> boxes (N, P, K, 4) decoded against the RoIs and clipped to each image (in
        the RoIs' pixels; not clipped with None: the ONNX graph clips by its own rule), scores
        (N, P, K) softmax probabilities without the background.
        """
        num_images, num_rois = rois.shape[:2]
        num_classes = self.num_classes
        scores = F.softmax(cls_score.float(), dim=-1)[..., :num_classes]  # (N, P, K)
        boxes_per_roi = bbox_pred.shape[-1] // 4  # K, or 1 when class-agnostic
        deltas = bbox_pred.float().view(num_images, num_rois, boxes_per_roi, 4)  # (N, P, K|1, 4)
        deltas = deltas.expand(-1, -1, num_classes, -1)  # (N, P, K, 4)
        priors = rois.float()[:, :, None, :].expand_as(deltas)  # (N, P, K, 4)
        boxes = self.bbox_coder.decode(
            priors.reshape(num_images, -1, 4),  # (N, P*K, 4)
            deltas.reshape(num_images, -1, 4),  # (N, P*K, 4)
            max_shape=img_shapes)  # (N, P*K, 4)
        return boxes.view(num_images, num_rois, num_classes, 4), scores
