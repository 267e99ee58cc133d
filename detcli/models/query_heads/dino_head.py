"""DINO's head (MMDetection 3.3's ``DINOHead``): Deformable DETR's two-stage, box-refining head,
plus the denoising queries' losses and DINO's encoder loss.

J decoder layers, N images, D denoising queries (``DenoisingMeta``: P groups of 2G), Q
matching queries, K classes, G GT slots.

forward: ``DeformableDETRHead``'s, on all D + Q queries of every layer (in training the first
D are the denoising ones; at inference there are none).

loss (``DINOHead.loss_by_feat``):

- the matching queries (the last Q): DETRHead's set loss of every layer (``loss_*``,
  ``d{j}.loss_*``) under the Hungarian matching;
- the encoder's top-Q proposals (the boxes and class logits the decoder starts from):
  the same set loss against the GT with their classes (not class-agnostic, unlike Deformable
  DETR's), ``enc_loss_cls``, ``enc_loss_bbox``, ``enc_loss_iou``. One assigner call matches
  the decoder layers and the encoder together (one host transfer);
- the denoising queries: no matching -- the positive copy of GT slot j in group p
  (``p * 2G + j``) is assigned to that GT; negative copies and padding slots are background
  (weight 1 in the classifier, none in the box losses). The classifier's normaliser is
  ``P * (GT in the batch)`` (+ ``bg_cls_weight`` times as many negatives: 0 with the focal
  loss), averaged over ranks with ``sync_cls_avg_factor``; the box losses' ``P * (GT in the
  batch)`` averaged over ranks (MMDetection's ``get_dn_targets`` / ``_loss_dn_single``). Keys
  ``dn_loss_*`` for the last layer and ``d{j}.dn_loss_*``. The counts stay on the device:
  no host read.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from detcli.models.losses.focal_loss import FocalLossConfig
from detcli.models.query_heads.deformable_detr_head import (
    DeformableDETRHead,
    DeformableDETRHeadConfig,
)
from detcli.models.query_heads.detr_head import ClassLossConfig, named_by_layer
from detcli.models.transformer.denoising import DenoisingMeta
from detcli.registry import HEADS, LOSSES
from detcli.structures.batch import DetTargets, ImageBatch
from detcli.structures.queries import QueryOutputs
from detcli.task.assigners.assign_result import NEGATIVE, AssignResult


def dino_cls_loss() -> FocalLossConfig:
    return FocalLossConfig(gamma=2.0, alpha=0.25, loss_weight=1.0)


class DINOHeadConfig(DeformableDETRHeadConfig):
    """DeformableDETRHead's settings with DINO's classification loss (focal, weight 1)."""

    type: Literal["DINOHead"] = "DINOHead"  # type: ignore[assignment]
    loss_cls: ClassLossConfig = Field(default_factory=dino_cls_loss, discriminator="type")


def denoising_assignment(meta: DenoisingMeta, gt_labels: Tensor) -> AssignResult:
    """The fixed assignment of the D denoising queries (N, D): each positive copy of a valid
    GT slot to that slot, every other query background (module docstring)."""
    _, negative, slot = meta.layout(gt_labels.device)  # (D,) each
    labels = gt_labels[:, slot]  # (N, D) the slot's label, -1 on padding
    positive = ~negative[None, :] & (labels >= 0)  # (N, D)
    gt_index = torch.where(positive, slot[None, :], NEGATIVE)
    return AssignResult(gt_index=gt_index, max_iou=positive.float(),
                        labels=torch.where(positive, labels, -1),
                        num_gts=(gt_labels >= 0).sum(1))


def split_queries(outputs: QueryOutputs, num_denoising: int) -> tuple[QueryOutputs, QueryOutputs]:
    """(J, N, D + Q, ...) -> the matching part (J, N, Q, ...) and the denoising part
    (J, N, D, ...) (MMDetection's ``split_outputs``)."""
    cls_logits, boxes = outputs
    matching = QueryOutputs(cls_logits[:, :, num_denoising:], boxes[:, :, num_denoising:])
    return matching, QueryOutputs(cls_logits[:, :, :num_denoising], boxes[:, :, :num_denoising])


@HEADS.register(DINOHeadConfig)
class DINOHead(DeformableDETRHead):
    """Deformable DETR's head with DINO's encoder and denoising losses (module docstring)."""

    def __init__(self, *, num_classes: int, embed_dims: int, share_pred_layer: bool,
                 num_pred_layer: int, as_two_stage: bool, loss_cls: nn.Module | None = None,
                 **parts: Any) -> None:
        """DeformableDETRHead's parts, with DINO's focal loss (weight 1) unless given."""
        super().__init__(num_classes=num_classes, embed_dims=embed_dims,
                         share_pred_layer=share_pred_layer, num_pred_layer=num_pred_layer,
                         as_two_stage=as_two_stage,
                         loss_cls=loss_cls or LOSSES.build(dino_cls_loss()), **parts)

    def loss(self, outputs: QueryOutputs, images: ImageBatch, targets: DetTargets,
             encoder_outputs: QueryOutputs | None = None,
             denoising: DenoisingMeta | None = None) -> dict[str, Tensor]:
        """Every layer's outputs (J, N, D + Q, ...), the encoder's top-Q proposals
        (1, N, Q, K) / (1, N, Q, 4) and the denoising layout -> the losses (module
        docstring)."""
        num_layers = outputs.boxes.shape[0]
        matching, dn = split_queries(outputs, denoising.num_queries if denoising else 0)
        if encoder_outputs is not None:  # one matching for the layers and the encoder
            matching = QueryOutputs(*(torch.cat(parts) for parts in zip(matching,
                                                                        encoder_outputs)))
        per_layer = self.layer_losses(matching, images, targets)
        losses = named_by_layer(per_layer[:num_layers])
        if encoder_outputs is not None:
            losses.update({f"enc_{name}": value for name, value in per_layer[-1].items()})
        if denoising is not None:
            losses.update(named_by_layer(self.denoising_losses(dn, denoising, images,
                                                               targets), tag="dn_"))
        return losses

    def denoising_losses(self, dn: QueryOutputs, meta: DenoisingMeta, images: ImageBatch,
                         targets: DetTargets) -> list[dict[str, Tensor]]:
        """Each layer's ``loss_cls``, ``loss_bbox``, ``loss_iou`` of the denoising queries
        (J, N, D, ...) under their fixed assignment (module docstring)."""
        result = denoising_assignment(meta, targets.labels)
        like = dn.boxes
        num_pos = meta.num_groups * targets.valid.sum()  # device: positives = negatives
        cls_avg = self._cls_avg_factor(num_pos, num_pos, like)
        box_avg = self._num_pos(num_pos, like)
        return [self.set_loss_terms(cls_logits, boxes, result, cls_avg, box_avg, images, targets)
                for cls_logits, boxes in zip(*dn)]
