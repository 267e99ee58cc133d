"""Deformable DETR's head (MMDetection 3.3's ``DeformableDETRHead``): one classifier and one box
branch per decoder layer, boxes predicted relative to each layer's reference, focal loss.

J decoder layers, N images, Q queries, S encoder tokens, D = ``embed_dims``, K classes.

- ``cls_branches.j``: Linear(D, K) (sigmoid logits); ``reg_branches.j``: ``num_reg_fcs``
  Linear(D, D) + ReLU pairs and a Linear(D, 4) (``reg_branches.j.0``, ``.2``, ``.4``).
  ``num_pred_layer`` of each: J, plus one for the encoder's proposals (``as_two_stage``: index
  J). ``share_pred_layer`` (Deformable DETR without box refinement): every index is the same
  module (the state dict still lists each index, as MMDetection's does).
- forward: layer j's box is ``sigmoid(reg_j(h_j) + logit(ref_j))``, ``ref_j`` the reference
  layer j sampled around -- (cx, cy) only for point references, the whole box otherwise.
- loss: DETRHead's set loss on every layer (focal ``loss_cls``, ``loss_bbox``, ``loss_iou``,
  ``d{j}.*``; sigmoid: the classification normaliser is the matched count alone) and, two-stage,
  ``enc_loss_cls/bbox/iou``: the same loss on the encoder's proposals against the GT with every
  label 0 (class-agnostic proposals).
- predict: DETRHead's sigmoid top-k over (query, class) pairs of the last layer.
- init: classifier biases at prior probability 0.01; the box branches' last layer zero, with
  the first one's (w, h) biases -2 (plain and refined: the first layer starts from small boxes)
  or every branch's (w, h) biases 0 (two-stage: the proposals give the size).
"""

from __future__ import annotations

import copy
from typing import Any, Literal, Sequence

import torch
from pydantic import Field
from torch import Tensor, nn

from detcli.config.schema import Schema
from detcli.errors import ConfigError
from detcli.ops.logits import inverse_sigmoid
from detcli.models.layers import bias_init_with_prob
from detcli.models.losses.focal_loss import FocalLossConfig
from detcli.models.query_heads.detr_head import (
    ClassLossConfig,
    DETRHead,
    DETRTestConfig,
    DETRTrainConfig,
    build_cls_loss,
    detr_giou_loss,
    detr_l1_loss,
)
from detcli.registry import ASSIGNERS, HEADS, LOSSES, LossConfig
from detcli.structures.batch import DetTargets, ImageBatch
from detcli.structures.queries import QueryOutputs
from detcli.task.assigners.hungarian import HungarianAssignerConfig
from detcli.task.assigners.match_costs import (
    BBoxL1CostConfig,
    FocalLossCostConfig,
    IoUCostConfig,
)


def focal_cls_loss() -> FocalLossConfig:
    return FocalLossConfig(gamma=2.0, alpha=0.25, loss_weight=2.0)


def deformable_assigner() -> HungarianAssignerConfig:
    """MMDetection's Deformable DETR costs: focal 2, L1 on normalised (cx, cy, w, h) 5, GIoU 2."""
    return HungarianAssignerConfig(match_costs=[
        FocalLossCostConfig(weight=2.0), BBoxL1CostConfig(weight=5.0, box_format="xywh"),
        IoUCostConfig(iou_mode="giou", weight=2.0)])


def deformable_train_cfg() -> DETRTrainConfig:
    return DETRTrainConfig(assigner=deformable_assigner())


class DeformableDETRHeadConfig(Schema):
    """DeformableDETRHead settings. ``embed_dims``, ``share_pred_layer``, ``num_pred_layer``
    and ``as_two_stage`` are derived from the detector (``with_box_refine``, the decoder's
    layers, ``as_two_stage``); set them only to assert them."""

    type: Literal["DeformableDETRHead"] = "DeformableDETRHead"
    num_classes: int = Field(ge=1)
    embed_dims: int | None = Field(None, ge=1)
    num_reg_fcs: int = Field(2, ge=1)
    sync_cls_avg_factor: bool = True
    share_pred_layer: bool | None = None
    num_pred_layer: int | None = Field(None, ge=1)
    as_two_stage: bool | None = None
    loss_cls: ClassLossConfig = Field(default_factory=focal_cls_loss, discriminator="type")
    loss_bbox: LossConfig = Field(default_factory=detr_l1_loss)
    loss_iou: LossConfig = Field(default_factory=detr_giou_loss)


def _reg_branch(embed_dims: int, num_reg_fcs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(num_reg_fcs):
        layers += [nn.Linear(embed_dims, embed_dims), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(embed_dims, 4))


@HEADS.register(DeformableDETRHeadConfig)
class DeformableDETRHead(DETRHead):
    """Per-layer branches relative to the references (module docstring); DETRHead's set loss
    and top-k."""

    def __init__(self, *, num_classes: int, embed_dims: int, share_pred_layer: bool,
                 num_pred_layer: int, as_two_stage: bool, num_reg_fcs: int = 2,
                 sync_cls_avg_factor: bool = True, loss_cls: nn.Module | None = None, loss_bbox: nn.Module | None = None,
                 loss_iou: nn.Module | None = None, assigner: Any = None,
                 test_cfg: DETRTestConfig | None = None) -> None:
        """Parts not given are MMDetection's Deformable DETR defaults: focal loss (2), L1 (5),
        GIoU (2), the focal/L1/GIoU Hungarian costs."""
        self.share_pred_layer = share_pred_layer
        self.num_pred_layer = num_pred_layer
        self.as_two_stage = as_two_stage
        if as_two_stage and num_pred_layer < 2:
            raise ConfigError("a two-stage DeformableDETRHead needs num_pred_layer >= 2 (the "
                              f"decoder's layers and the encoder's), got {num_pred_layer}")
        super().__init__(
            num_classes=num_classes, embed_dims=embed_dims, num_reg_fcs=num_reg_fcs,
            sync_cls_avg_factor=sync_cls_avg_factor, bg_cls_weight=0.0,
            loss_cls=loss_cls or LOSSES.build(focal_cls_loss()),
            loss_bbox=loss_bbox, loss_iou=loss_iou,
            assigner=assigner or ASSIGNERS.build(deformable_assigner()), test_cfg=test_cfg)
        self.init_weights()

    @classmethod
    def from_config(cls, cfg: DeformableDETRHeadConfig, *,
                    train_cfg: DETRTrainConfig | None = None,
                    test_cfg: DETRTestConfig | None = None) -> DeformableDETRHead:
        derived = {"embed_dims": cfg.embed_dims, "share_pred_layer": cfg.share_pred_layer,
                   "num_pred_layer": cfg.num_pred_layer, "as_two_stage": cfg.as_two_stage}
        missing = [name for name, value in derived.items() if value is None]
        if missing:
            raise ConfigError(f"DeformableDETRHead needs {', '.join(missing)}: a DeformableDETR "
                              "config derives them; set them to build the head on its own")
        train_cfg = train_cfg or deformable_train_cfg()
        return cls(num_classes=cfg.num_classes, num_reg_fcs=cfg.num_reg_fcs,
                   sync_cls_avg_factor=cfg.sync_cls_avg_factor,
                   loss_cls=build_cls_loss(cfg.loss_cls, cfg.num_classes, 0.0),
                   loss_bbox=LOSSES.build(cfg.loss_bbox), loss_iou=LOSSES.build(cfg.loss_iou),
                   assigner=ASSIGNERS.build(train_cfg.assigner), test_cfg=test_cfg, **derived)

    def _init_layers(self, num_reg_fcs: int) -> None:
        """``cls_branches`` and ``reg_branches``, shared or copied (module docstring)."""
        fc_cls = nn.Linear(self.embed_dims, self.cls_out_channels)
        reg_branch = _reg_branch(self.embed_dims, num_reg_fcs)
        if self.share_pred_layer:
            self.cls_branches = nn.ModuleList([fc_cls] * self.num_pred_layer)
            self.reg_branches = nn.ModuleList([reg_branch] * self.num_pred_layer)
        else:
            self.cls_branches = nn.ModuleList(copy.deepcopy(fc_cls)
                                              for _ in range(self.num_pred_layer))
            self.reg_branches = nn.ModuleList(copy.deepcopy(reg_branch)
                                              for _ in range(self.num_pred_layer))

    def init_weights(self) -> None:
        """MMDetection's init (module docstring)."""
        if self.use_sigmoid:
            for branch in self.cls_branches:
                nn.init.constant_(branch.bias, bias_init_with_prob(0.01))
        with torch.no_grad():
            for branch in self.reg_branches:
                nn.init.zeros_(branch[-1].weight)
                nn.init.zeros_(branch[-1].bias)
            self.reg_branches[0][-1].bias[2:] = -2.0
            if self.as_two_stage:
                for branch in self.reg_branches:
                    branch[-1].bias[2:] = 0.0

    def forward(self, hidden_states: Tensor, references: Sequence[Tensor]) -> QueryOutputs:
        """Hidden states (J, N, Q, D) and the reference each layer sampled around, J tensors
        (N, Q, 2 or 4) in [0, 1] -> logits (J, N, Q, K) and boxes (J, N, Q, 4)."""
        logits, boxes = [], []
        for layer, (hidden, reference) in enumerate(zip(hidden_states, references)):
            deltas = self.reg_branches[layer](hidden)  # (N, Q, 4)
            logit_ref = inverse_sigmoid(reference)
            if reference.shape[-1] == 2:
                logit_ref = torch.cat((logit_ref, torch.zeros_like(logit_ref)), -1)
            logits.append(self.cls_branches[layer](hidden))
            boxes.append((deltas + logit_ref).sigmoid())
        return QueryOutputs(torch.stack(logits), torch.stack(boxes))

    def proposals(self, memory: Tensor, proposal_logits: Tensor) -> tuple[Tensor, Tensor]:
        """Two-stage: the encoder's transformed memory (N, S, D) and its proposals in logit
        space (N, S, 4) -> class logits (N, S, K) and unsquashed boxes (N, S, 4) from the
        extra branches (index J = ``num_pred_layer - 1``)."""
        last = self.num_pred_layer - 1
        return self.cls_branches[last](memory), self.reg_branches[last](memory) + proposal_logits

    def loss(self, outputs: QueryOutputs, images: ImageBatch, targets: DetTargets,
             encoder_outputs: QueryOutputs | None = None) -> dict[str, Tensor]:
        """DETRHead's set loss of every layer, and, given the encoder's proposals
        (1, N, S, K) / (1, N, S, 4), ``enc_loss_*`` against class-agnostic GT."""
        losses = super().loss(outputs, images, targets)
        if encoder_outputs is None:
            return losses
        agnostic = DetTargets(targets.boxes, torch.where(targets.valid, 0, targets.labels),
                              targets.ignore_boxes, targets.ignore_valid)
        matching = self.match(encoder_outputs, images, agnostic)
        terms = self._layer_loss(encoder_outputs.cls_logits[0], encoder_outputs.boxes[0],
                                 matching.result, sum(matching.num_matched), images, agnostic)
        return {**losses, **{f"enc_{name}": value for name, value in terms.items()}}
