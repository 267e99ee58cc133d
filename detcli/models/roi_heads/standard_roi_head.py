"""The second stage of Faster R-CNN: sample proposals, pool their features, classify and refine
them (MMDetection 2.x's ``StandardRoIHead`` with a box branch only).

N images, P proposal slots per image, G GT slots per image, K classes, R' = G + P candidates
per image when the sampler prepends the GT boxes (``add_gt_as_proposals``, else P), S sampled
slots per image (``sampler.num``; R' for a sampler without a budget), M ``max_per_img``.

Call graph::

    loss(feats, proposals, images, targets):
        sample() -> RoISamples (N, S) -> bbox_forward() on all N*S slots -> bbox_head.loss()
    predict(feats, proposals, images, rescale):
        bbox_forward() on all N*P proposal slots -> bbox_head.predict_boxes() -> one NMS

Training uses every sampled slot, padding included, so shapes are fixed: padding slots (an
image with fewer than S candidates) have zero label and box weights and are not counted by any
average (``loss_cls`` and ``acc`` count label weights > 0, ``loss_bbox`` the valid slots). The
whole batch is assigned and sampled at once; the only host syncs are the RoI extractor's level
counts and the NMS output size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Sequence

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from detcli.config.schema import Schema, derive_or_check
from detcli.errors import DetError
from detcli.models.roi_heads.roi_extractor import SingleRoIExtractorConfig
from detcli.registry import (
    ASSIGNERS,
    BBOX_HEADS,
    ROI_EXTRACTORS,
    ROI_HEADS,
    SAMPLERS,
    BBoxHeadConfig,
    RoIExtractorConfig,
)
from detcli.structures.batch import DetTargets, ImageBatch
from detcli.structures.detections import DetectionBatch
from detcli.structures.proposals import Proposals
from detcli.task.postprocess import nms_to_batch
from detcli.task.two_stage_cfg import RCNNTestConfig, RCNNTrainConfig

# the sort keys that put each image's sampled slots first: positives, negatives, the rest
_POS, _NEG, _UNUSED = 0, 1, 2


def fpn_roi_extractor() -> SingleRoIExtractorConfig:
    """Faster R-CNN R50-FPN's: RoIAlign 7 x 7 on the strides 4..32 maps (not the P6 one)."""
    return SingleRoIExtractorConfig(featmap_strides=[4, 8, 16, 32])


def trim_padding(proposals: Proposals) -> Proposals:
    """Drop the trailing slots no image uses: (N, P) -> (N, P'), P' = 1 + the last valid slot
    of any image (at least 1). A small image's RPN often keeps far fewer than ``max_per_img``
    proposals, and every slot costs a RoIAlign and the box head. One host sync, after the
    proposals' NMS has made one anyway; not for traced graphs (export keeps fixed shapes)."""
    num_slots = proposals.boxes.shape[1]
    if proposals.valid.numel() == 0:
        return proposals
    slot = torch.arange(1, num_slots + 1, device=proposals.valid.device)  # (P,) 1-based
    used = max(int((proposals.valid * slot).max()), 1)
    if used >= num_slots:
        return proposals
    return Proposals(proposals.boxes[:, :used], proposals.scores[:, :used],
                     proposals.valid[:, :used])


def batch_rois(boxes: Tensor) -> Tensor:
    """Per-image boxes (N, P, 4) -> RoIs (N*P, 5) ``[batch_index, x1, y1, x2, y2]``
    (MMDetection's ``bbox2roi`` with every image holding P boxes)."""
    num_images, num_boxes = boxes.shape[:2]
    index = torch.arange(num_images, device=boxes.device, dtype=boxes.dtype)  # (N,)
    index = index[:, None, None].expand(-1, num_boxes, 1)  # (N, P, 1)
    return torch.cat([index, boxes], dim=-1).reshape(-1, 5)  # (N*P, 5)


def rcnn_detections(det_boxes: Tensor, scores: Tensor, valid: Tensor, images: ImageBatch,
                    cfg: RCNNTestConfig, rescale: bool) -> DetectionBatch:
    """A box head's per-class boxes (N, P, K, 4) in network-input pixels and scores (N, P, K)
    for P RoI slots per image (``valid`` (N, P): a real RoI) -> detections padded to
    ``cfg.max_per_img``: boxes divided by the scale factors with ``rescale``; the scores above
    ``score_thr`` whose box sides exceed ``min_bbox_size`` go through one NMS per class
    (StandardRoIHead's and CascadeRoIHead's last step)."""
    num_images, num_props, num_classes = scores.shape
    if rescale:
        factors = images.scale_factors.to(det_boxes)[:, None, None, :]  # (N, 1, 1, 4)
        det_boxes = det_boxes / factors  # (N, P, K, 4) original pixels
    widths = det_boxes[..., 2] - det_boxes[..., 0]  # (N, P, K)
    heights = det_boxes[..., 3] - det_boxes[..., 1]  # (N, P, K)
    keep = (valid[..., None] & (scores > cfg.score_thr)
            & (widths > cfg.min_bbox_size) & (heights > cfg.min_bbox_size))  # (N, P, K)
    labels = torch.arange(num_classes, device=scores.device).expand_as(scores)  # (N, P, K)
    flat = num_props * num_classes
    return nms_to_batch(
        det_boxes.reshape(num_images, flat, 4),  # (N, P*K, 4)
        scores.reshape(num_images, flat),  # (N, P*K)
        labels.reshape(num_images, flat),  # (N, P*K)
        keep.reshape(num_images, flat),  # (N, P*K)
        cfg)


@dataclass
class RoISamples:
    """The RoIs the box head learns from, S slots per image: positives first, then negatives,
    then padding (``valid`` False), each group in candidate order (GT boxes first)."""

    rois: Tensor  # (N, S, 4) boxes in network-input pixels; zeros on padding
    valid: Tensor  # (N, S) bool: a sampled RoI
    pos: Tensor  # (N, S) bool: a sampled positive
    gt_flags: Tensor  # (N, S) bool: the RoI is a GT box added as a proposal
    labels: Tensor  # (N, S) int64: class in [0, K) on positives, K elsewhere (padding too)
    label_weights: Tensor  # (N, S) float: pos_weight on positives, 1 on negatives, 0 on padding
    bbox_targets: Tensor  # (N, S, 4): encoded deltas (GT boxes with reg_decoded_bbox), 0 off pos
    bbox_weights: Tensor  # (N, S) float: 1 on positives, else 0
    gt_index: Tensor  # (N, S) int64: matched GT slot on positives, -1 elsewhere
    iou: Tensor  # (N, S) float: IoU with the best GT (1 for GT boxes); 0 on padding

    @property
    def num_pos(self) -> Tensor:
        return self.pos.sum(dim=1)  # (N,)

    @property
    def num_sampled(self) -> Tensor:
        return self.valid.sum(dim=1)  # (N,)


class StandardRoIHeadConfig(Schema):
    type: Literal["StandardRoIHead"] = "StandardRoIHead"
    bbox_roi_extractor: RoIExtractorConfig = Field(default_factory=fpn_roi_extractor)
    bbox_head: BBoxHeadConfig

    @model_validator(mode="after")
    def _connect(self) -> StandardRoIHeadConfig:
        roi_layer = getattr(self.bbox_roi_extractor, "roi_layer", None)
        pooled = getattr(roi_layer, "output_pair", None)
        feat_size = getattr(self.bbox_head, "roi_feat_size", None)
        if pooled is not None and feat_size is not None and tuple(pooled) != (feat_size,) * 2:
            raise ValueError(
                f"model.roi_head.bbox_head.roi_feat_size = {feat_size} disagrees with "
                f"model.roi_head.bbox_roi_extractor.roi_layer.output_size = "
                f"{roi_layer.output_size}: the box head reads the pooled RoI features, so set "
                "both to the same size")
        channels = getattr(self.bbox_roi_extractor, "out_channels", None)
        if channels is not None:
            derive_or_check(
                self.bbox_head, "in_channels", channels,
                f"model.roi_head.bbox_roi_extractor ({self.bbox_roi_extractor.type} "
                f"out_channels {channels})",
                "model.roi_head.bbox_head.in_channels")
        return self


@ROI_HEADS.register(StandardRoIHeadConfig)
class StandardRoIHead(nn.Module):
    """``bbox_roi_extractor`` -> ``bbox_head``; see the module docstring.

    ``train_cfg`` (assigner, sampler, ``pos_weight``) is needed by :meth:`loss` only,
    ``test_cfg`` (``score_thr``, ``nms``, ``max_per_img``, ``min_bbox_size``) by :meth:`predict`.
    """

    def __init__(
        self,
        *,
        bbox_roi_extractor: nn.Module,
        bbox_head: nn.Module,
        train_cfg: RCNNTrainConfig | None = None,
        test_cfg: RCNNTestConfig | None = None,
    ) -> None:
        super().__init__()
        self.bbox_roi_extractor = bbox_roi_extractor
        self.bbox_head = bbox_head
        self.num_classes: int = bbox_head.num_classes
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg if test_cfg is not None else RCNNTestConfig()
        self.assigner = self.sampler = None
        if train_cfg is not None:
            self.assigner = ASSIGNERS.build(train_cfg.assigner)
            self.sampler = SAMPLERS.build(train_cfg.sampler)

    @classmethod
    def from_config(
        cls,
        cfg: StandardRoIHeadConfig,
        *,
        in_channels: int | None = None,
        train_cfg: RCNNTrainConfig | None = None,
        test_cfg: RCNNTestConfig | None = None,
    ) -> StandardRoIHead:
        """Build with ``in_channels`` (the neck's out_channels) passed to the extractor, whose
        channels the box head reads."""
        extractor = ROI_EXTRACTORS.build(cfg.bbox_roi_extractor, in_channels=in_channels)
        bbox_head = BBOX_HEADS.build(cfg.bbox_head,
                                     in_channels=getattr(extractor, "out_channels", None))
        return cls(bbox_roi_extractor=extractor, bbox_head=bbox_head,
                   train_cfg=train_cfg, test_cfg=test_cfg)

    def bbox_forward(self, feats: Sequence[Tensor], rois: Tensor) -> tuple[Tensor, Tensor]:
        """feats L x (N, C, H_l, W_l), rois (R, 5) -> cls_score (R, K + 1), bbox_pred
        (R, 4K or 4)."""
        roi_feats = self.bbox_roi_extractor(feats, rois)  # (R, C, S, S)
        return self.bbox_head(roi_feats)

    # ---- training --------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, proposals: Proposals, targets: DetTargets,
               generator: Optional[torch.Generator] = None) -> RoISamples:
        """Assign every proposal of the batch, sample, and compact each image's sampled RoIs
        into S slots (see :class:`RoISamples`). ``generator`` makes the draw reproducible."""
        if self.assigner is None or self.sampler is None or self.train_cfg is None:
            raise DetError("StandardRoIHead.loss and .sample need a train_cfg (assigner, sampler); "
                           "the model was built with train_cfg = false")
        if len(proposals) != targets.labels.shape[0]:
            raise DetError(f"proposals hold {len(proposals)} images but the targets "
                           f"{targets.labels.shape[0]}")
        boxes = proposals.boxes.detach().float()  # (N, P, 4)
        gt_boxes = targets.boxes.to(boxes)  # (N, G, 4)
        gt_labels = targets.labels  # (N, G)
        assign = self.assigner.assign(
            boxes, gt_boxes, gt_labels, targets.ignore_boxes.to(boxes), targets.ignore_valid,
            prior_valid=proposals.valid)  # over (N, P)
        sampled = self.sampler.sample(assign, boxes, gt_boxes, gt_labels,
                                      generator=generator)  # over (N, R')
        assign = sampled.assign
        candidates = sampled.priors.expand(len(proposals), -1, -1)  # (N, R', 4)
        num_candidates = candidates.shape[1]
        num_slots = getattr(self.sampler, "num", None) or num_candidates

        key = torch.full(sampled.pos_mask.shape, _UNUSED, dtype=torch.long,
                         device=boxes.device)  # (N, R')
        key.masked_fill_(sampled.neg_mask, _NEG)
        key.masked_fill_(sampled.pos_mask, _POS)
        key, order = torch.sort(key, dim=1, stable=True)  # (N, R') each: sampled first
        if num_candidates < num_slots:  # fewer candidates than slots: pad with unused ones
            pad = num_slots - num_candidates
            key = torch.cat([key, key.new_full((key.shape[0], pad), _UNUSED)], dim=1)
            order = torch.cat([order, order.new_zeros(order.shape[0], pad)], dim=1)
        key, order = key[:, :num_slots], order[:, :num_slots]  # (N, S) each
        valid = key != _UNUSED  # (N, S)
        pos = key == _POS  # (N, S)
        neg = key == _NEG  # (N, S)

        def pick(values: Tensor) -> Tensor:  # (N, R') -> (N, S)
            return torch.gather(values, 1, order)

        rois = torch.gather(candidates, 1, order[..., None].expand(-1, -1, 4))  # (N, S, 4)
        rois = rois * valid[..., None]  # (N, S, 4) zeros on padding
        gt_index = torch.where(pos, pick(assign.gt_index), -1)  # (N, S)
        labels = torch.where(pos, pick(assign.labels), self.num_classes)  # (N, S)
        pos_weight = self.train_cfg.pos_weight if self.train_cfg.pos_weight > 0 else 1.0
        label_weights = pos.float() * pos_weight + neg.float()  # (N, S)
        bbox_targets = self._bbox_targets(rois, gt_boxes, gt_index, pos)  # (N, S, 4)
        return RoISamples(
            rois=rois,
            valid=valid,
            pos=pos,
            gt_flags=pick(sampled.gt_flags) & valid,
            labels=labels,
            label_weights=label_weights,
            bbox_targets=bbox_targets,
            bbox_weights=pos.float(),
            gt_index=gt_index,
            iou=pick(assign.max_iou) * valid,
        )

    def _bbox_targets(self, rois: Tensor, gt_boxes: Tensor, gt_index: Tensor,
                      pos: Tensor) -> Tensor:
        """Matched GT of every positive RoI, encoded against it (or as is, with
        ``reg_decoded_bbox``); zeros elsewhere: (N, S, 4)."""
        if gt_boxes.shape[1] == 0:  # no GT anywhere in the batch: nothing is positive
            return torch.zeros_like(rois)
        index = gt_index.clamp(min=0)[..., None].expand(-1, -1, 4)  # (N, S, 4)
        matched = torch.gather(gt_boxes, 1, index)  # (N, S, 4)
        if self.bbox_head.reg_decoded_bbox:
            targets = matched
        else:
            # non-positives (padding has empty RoIs) encode a unit box against itself: finite
            unit = rois.new_zeros(4)
            unit[2:].fill_(1.0)  # (0, 0, 1, 1), filled on the device: no host-to-device copy
            targets = self.bbox_head.bbox_coder.encode(
                torch.where(pos[..., None], rois, unit),
                torch.where(pos[..., None], matched, unit))  # (N, S, 4)
        return torch.where(pos[..., None], targets, torch.zeros_like(targets))

    def loss(self, feats: Sequence[Tensor], proposals: Proposals, images: ImageBatch,
             targets: DetTargets) -> dict[str, Tensor]:
        """``{"loss_cls", "loss_bbox", "acc"}`` over the sampled RoIs of the batch."""
        if len(proposals) != len(images):
            raise DetError(f"proposals hold {len(proposals)} images but the image batch has "
                           f"{len(images)}")
        samples = self.sample(proposals, targets)
        rois = batch_rois(samples.rois)  # (N*S, 5): every slot, padding weighted 0
        cls_score, bbox_pred = self.bbox_forward(feats, rois)  # (N*S, K + 1), (N*S, 4K or 4)
        return self.bbox_head.loss(
            cls_score,
            bbox_pred,
            samples.rois.reshape(-1, 4),  # (N*S, 4)
            samples.labels.reshape(-1),  # (N*S,)
            samples.label_weights.reshape(-1),  # (N*S,)
            samples.bbox_targets.reshape(-1, 4),  # (N*S, 4)
            samples.bbox_weights.reshape(-1),  # (N*S,)
            avg_factor_bbox=samples.valid.sum().clamp(min=1).float(),  # sampled RoIs, on device
        )

    # ---- inference -------------------------------------------------------------------------

    def predict(self, feats: Sequence[Tensor], proposals: Proposals, images: ImageBatch,
                rescale: bool = True) -> DetectionBatch:
        """Detections of every image, padded to ``test_cfg.max_per_img``.

        The proposal slots past the fullest image's last valid one are dropped first (each
        image's valid proposals come first); the rest are classified and regressed together,
        and the remaining padding slots are masked out before NMS. Boxes are in
        original-image pixels with ``rescale`` (else network-input pixels).
        """
        cfg = self.test_cfg
        proposals = trim_padding(proposals)
        boxes = proposals.boxes.float()  # (N, P', 4)
        num_images, num_props = boxes.shape[:2]
        cls_score, bbox_pred = self.bbox_forward(feats, batch_rois(boxes))  # (N*P, ...)
        img_shapes = images.img_shapes.to(boxes.device, torch.float32)  # (N, 2)
        det_boxes, scores = self.bbox_head.predict_boxes(
            boxes, cls_score.view(num_images, num_props, cls_score.shape[-1]),
            bbox_pred.view(num_images, num_props, bbox_pred.shape[-1]),
            img_shapes)  # (N, P, K, 4), (N, P, K)
        return rcnn_detections(det_boxes, scores, proposals.valid, images, cfg, rescale)
