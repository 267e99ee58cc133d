"""The second stage of Faster R-CNN and Mask R-CNN: sample proposals, pool their features,
classify and refine them, and (with a mask branch) segment the positives / the detections
(MMDetection's ``StandardRoIHead``).

N images, P proposal slots per image, G GT slots per image, K classes, R' = G + P candidates
per image when the sampler prepends the GT boxes (``add_gt_as_proposals``, else P), S sampled
slots per image (``sampler.num``; R' for a sampler without a budget), M ``max_per_img``.

Call graph::

    loss(feats, proposals, images, targets):
        sample() -> RoISamples (N, S) -> bbox_forward() on all N*S slots -> bbox_head.loss()
    predict(feats, proposals, images, rescale):
        bbox_forward() on all N*P proposal slots -> bbox_head.predict_boxes() -> one NMS

With ``mask_head`` (Mask R-CNN; MMDetection 3.3's mask branch) ``loss`` adds ``loss_mask``:
the first Q slots of each image (Q = the sampler's positive budget, so every positive is
among them; they come first) are pooled by ``mask_roi_extractor`` (14 x 14; the box
extractor when none is configured, MMDetection's ``share_roi_extractor``), the mask head's
logits of each positive's GT class are compared with its GT mask cropped to the RoI
(``train_cfg.mask_size``, :mod:`~detcli.models.roi_heads.mask_target`); non-positive slots
weigh 0. ``predict`` pools the detections' boxes in network-input pixels (MMDetection predicts
the boxes unscaled when it segments, so NMS runs before the rescale) and returns the
(N, M, h, w) probability of each detection's class in ``DetectionBatch.mask_probs``; pasting
them into the image is the detector's ``predict`` (:mod:`~detcli.models.roi_heads.mask_paste`).
The branch's steps are functions in :mod:`~detcli.models.roi_heads.mask_branch` (Cascade Mask
R-CNN's stages use them too). Without ``mask_head`` nothing of this runs: Faster R-CNN is
unchanged.

Training uses every sampled slot, padding included, so shapes are fixed: padding slots (an
image with fewer than S candidates) have zero label and box weights and are not counted by any
average (``loss_cls`` and ``acc`` count label weights > 0, ``loss_bbox`` the valid slots). The
whole batch is assigned and sampled at once; the only host syncs are the RoI extractor's level
counts and the NMS output size (the mask branch adds the mask extractor's level counts).
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Optional, Sequence

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from detcli.config.schema import Maybe, derive_or_check
from detcli.errors import ConfigError, DetError
from detcli.models.channels import RoIHeadSchema, connect_head
from detcli.models.roi_heads.mask_branch import (
    NEEDS_MASK_SIZE,
    check_mask_branch,
    mask_loss_of,
    mask_slots,
    segment_detections,
    with_mask_probs,
)
from detcli.models.roi_heads.roi_extractor import SingleRoIExtractorConfig, check_pooled_size
from detcli.models.roi_heads.rois import RoISamples, batch_rois
from detcli.registry import (
    ASSIGNERS,
    BBOX_HEADS,
    MASK_HEADS,
    ROI_EXTRACTORS,
    ROI_HEADS,
    SAMPLERS,
    BBoxHeadConfig,
    MaskHeadConfig,
    RoIExtractorConfig,
)
from detcli.structures.batch import DetTargets, ImageBatch
from detcli.structures.detections import DetectionBatch
from detcli.structures.proposals import Proposals
from detcli.task.postprocess import nms_to_batch
from detcli.task.two_stage_cfg import RCNNMaskTrainConfig, RCNNTestConfig, RCNNTrainConfig

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


def sampled_slots(pos_mask: Tensor, neg_mask: Tensor,
                  num_slots: int) -> tuple[Tensor, Tensor, Tensor]:
    """Each image's sampled candidates compacted into S = ``num_slots`` slots (the layout of
    :class:`RoISamples`): the positives, then the negatives, each in candidate order, then
    unused slots. pos_mask, neg_mask (N, R') bool -> (order (N, S) int64: the candidate in each
    slot, 0 on unused ones; pos (N, S) bool; neg (N, S) bool). Shapes only: no host sync."""
    num_images, num_candidates = pos_mask.shape
    key = torch.full(pos_mask.shape, _UNUSED, dtype=torch.long, device=pos_mask.device)
    key.masked_fill_(neg_mask, _NEG)
    key.masked_fill_(pos_mask, _POS)
    key, order = torch.sort(key, dim=1, stable=True)  # (N, R') each: sampled first
    if num_candidates < num_slots:  # fewer candidates than slots: pad with unused ones
        pad = num_slots - num_candidates
        key = torch.cat([key, key.new_full((num_images, pad), _UNUSED)], dim=1)
        order = torch.cat([order, order.new_zeros(num_images, pad)], dim=1)
    key, order = key[:, :num_slots], order[:, :num_slots]  # (N, S) each
    return order, key == _POS, key == _NEG


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


class StandardRoIHeadConfig(RoIHeadSchema):
    type: Literal["StandardRoIHead"] = "StandardRoIHead"
    bbox_roi_extractor: RoIExtractorConfig = Field(default_factory=fpn_roi_extractor)
    bbox_head: BBoxHeadConfig
    # Mask R-CNN's mask branch; no mask_roi_extractor with a mask_head: share the box one
    mask_roi_extractor: Maybe[RoIExtractorConfig] = None
    mask_head: Maybe[MaskHeadConfig] = None

    @model_validator(mode="after")
    def _connect(self) -> StandardRoIHeadConfig:
        check_pooled_size(self.bbox_roi_extractor, self.bbox_head, "bbox_roi_extractor",
                          "bbox_head", "the box head reads")
        channels = getattr(self.bbox_roi_extractor, "out_channels", None)
        if channels is not None:
            derive_or_check(
                self.bbox_head, "in_channels", channels,
                f"model.roi_head.bbox_roi_extractor ({self.bbox_roi_extractor.type} "
                f"out_channels {channels})",
                "model.roi_head.bbox_head.in_channels")
        if self.mask_head is not None:  # it reads the mask extractor's (or the box one's) RoIs
            shared = self.mask_roi_extractor is None
            check_mask_branch(self.mask_head, self.bbox_roi_extractor if shared
                              else self.mask_roi_extractor,
                              "bbox_roi_extractor" if shared else "mask_roi_extractor")
        return self

    def connect(self, in_channels: int, source: str, where: str) -> None:
        """The extractor pools maps of ``in_channels`` (from ``source``); the box head reads
        what it pools."""
        extractor_key = f"{where}.bbox_roi_extractor.out_channels"
        derive_or_check(self.bbox_roi_extractor, "out_channels", in_channels, source,
                        extractor_key)
        connect_head(self.bbox_head, in_channels, extractor_key, f"{where}.bbox_head")
        if self.mask_head is not None:  # the mask branch reads the neck too
            mask_key = extractor_key
            if self.mask_roi_extractor is not None:
                mask_key = f"{where}.mask_roi_extractor.out_channels"
                derive_or_check(self.mask_roi_extractor, "out_channels", in_channels, source,
                                mask_key)
            derive_or_check(self.mask_head, "in_channels", in_channels, mask_key,
                            f"{where}.mask_head.in_channels")


@ROI_HEADS.register(StandardRoIHeadConfig)
class StandardRoIHead(nn.Module):
    """``bbox_roi_extractor`` -> ``bbox_head``; see the module docstring.

    ``train_cfg`` (assigner, sampler, ``pos_weight``; ``mask_size`` with a mask head) is needed
    by :meth:`loss` only, ``test_cfg`` (``score_thr``, ``nms``, ``max_per_img``,
    ``min_bbox_size``) by :meth:`predict`. ``mask_roi_extractor`` and ``mask_head`` are the
    optional mask branch (the box extractor is shared when only ``mask_head`` is given).
    """

    def __init__(
        self,
        *,
        bbox_roi_extractor: nn.Module,
        bbox_head: nn.Module,
        train_cfg: RCNNTrainConfig | None = None,
        test_cfg: RCNNTestConfig | None = None,
        mask_roi_extractor: nn.Module | None = None,
        mask_head: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.bbox_roi_extractor = bbox_roi_extractor
        self.bbox_head = bbox_head
        if mask_head is None and mask_roi_extractor is not None:
            raise ConfigError("roi_head has a mask_roi_extractor but no mask_head: add "
                              "model.roi_head.mask_head or remove the extractor")
        if mask_head is not None and train_cfg is not None \
                and not isinstance(train_cfg, RCNNMaskTrainConfig):
            raise ConfigError(NEEDS_MASK_SIZE)
        # None adds no module (no state-dict key): without a mask head this is Faster R-CNN's
        self.mask_roi_extractor = mask_roi_extractor
        self.mask_head = mask_head
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
        train_cfg: RCNNTrainConfig | None = None,
        test_cfg: RCNNTestConfig | None = None,
    ) -> StandardRoIHead:
        """Build the extractor and the box head a resolved config describes (their channels
        were connected then: :meth:`StandardRoIHeadConfig.connect`)."""
        extractor = ROI_EXTRACTORS.build(cfg.bbox_roi_extractor)
        bbox_head = BBOX_HEADS.build(cfg.bbox_head)
        mask_extractor = mask_head = None
        if cfg.mask_head is not None:
            mask_extractor = None if cfg.mask_roi_extractor is None else ROI_EXTRACTORS.build(
                cfg.mask_roi_extractor)
            mask_head = MASK_HEADS.build(cfg.mask_head)
        return cls(bbox_roi_extractor=extractor, bbox_head=bbox_head,
                   train_cfg=train_cfg, test_cfg=test_cfg,
                   mask_roi_extractor=mask_extractor, mask_head=mask_head)

    @property
    def with_mask(self) -> bool:
        """Whether the head has a mask branch (Mask R-CNN)."""
        return self.mask_head is not None

    def bbox_forward(self, feats: Sequence[Tensor], rois: Tensor) -> tuple[Tensor, Tensor]:
        """feats L x (N, C, H_l, W_l), rois (R, 5) -> cls_score (R, K + 1), bbox_pred
        (R, 4K or 4)."""
        roi_feats = self.bbox_roi_extractor(feats, rois)  # (R, C, S, S)
        return self.bbox_head(roi_feats)

    def box_stages(self) -> list[tuple[nn.Module, nn.Module]]:
        """(RoI extractor, box head) of each box stage: this head has one."""
        return [(self.bbox_roi_extractor, self.bbox_head)]

    def box_outputs(self, feats: Sequence[Tensor], rois: Tensor,
                    clip: Callable[[Tensor], Tensor] | None = None,
                    **extract_kwargs: Any) -> tuple[Tensor, Tensor, Tensor]:
        """rois (N, P, 4) -> (the RoIs the box head read (N, P, 4): these, cls_score (N, P,
        K + 1), bbox_pred (N, P, 4K or 4)); ``extract_kwargs`` go to the extractor (the ONNX
        graph's ``dense = True``). ``clip`` is for multi-stage heads (unused: one stage)."""
        num_images, num_rois = rois.shape[:2]
        roi_feats = self.bbox_roi_extractor(feats, batch_rois(rois), **extract_kwargs)
        cls_score, bbox_pred = self.bbox_head(roi_feats)  # (N*P, K + 1), (N*P, 4K or 4)
        return (rois, cls_score.reshape(num_images, num_rois, -1),
                bbox_pred.reshape(num_images, num_rois, -1))

    def mask_forward(self, feats: Sequence[Tensor], rois: Tensor, **extract_kwargs: Any) -> Tensor:
        """feats L x (N, C, H_l, W_l), rois (R, 5) -> mask logits (R, K or 1, h, w), pooled by
        the mask extractor (the box one when shared); ``extract_kwargs`` go to the extractor
        (the ONNX graph's ``dense = True``)."""
        if self.mask_head is None:
            raise DetError("this roi_head has no mask_head: it predicts boxes only")
        extractor = self.mask_roi_extractor or self.bbox_roi_extractor
        return self.mask_head(extractor(feats, rois, **extract_kwargs))  # (R, K or 1, h, w)

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
        num_slots = self.sampler.num or candidates.shape[1]  # Sampler protocol: None keeps all

        order, pos, neg = sampled_slots(sampled.pos_mask, sampled.neg_mask, num_slots)
        valid = pos | neg  # (N, S)

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
        losses = self.bbox_head.loss(
            cls_score,
            bbox_pred,
            samples.rois.reshape(-1, 4),  # (N*S, 4)
            samples.labels.reshape(-1),  # (N*S,)
            samples.label_weights.reshape(-1),  # (N*S,)
            samples.bbox_targets.reshape(-1, 4),  # (N*S, 4)
            samples.bbox_weights.reshape(-1),  # (N*S,)
            avg_factor_bbox=samples.valid.sum().clamp(min=1).float(),  # sampled RoIs, on device
        )
        if self.mask_head is not None:
            losses.update(self.mask_loss(feats, samples, targets))
        return losses

    def mask_slots(self, num_slots: int) -> int:
        """Q, the RoI slots of each image the mask branch trains on: the sampler's positive
        budget (the Sampler protocol's ``max_pos``), which no image's positives exceed and which
        come first in its slots; every slot for a sampler without one. A fixed number, so the
        mask branch's shapes do not depend on the data."""
        return mask_slots(self.sampler.max_pos, num_slots)  # Sampler protocol's max_pos

    def mask_loss(self, feats: Sequence[Tensor], samples: RoISamples,
                  targets: DetTargets) -> dict[str, Tensor]:
        """``{"loss_mask"}`` over the sampled positives (MMDetection 3.3's ``mask_loss``): the
        first Q slots of each image are pooled and segmented, each positive's GT mask is
        cropped to it, the other slots weigh 0."""
        rois = self.mask_rois(samples)  # (N, Q, 4)
        mask_preds = self.mask_forward(feats, batch_rois(rois))  # (N*Q, K or 1, h, w)
        return self.mask_loss_of(mask_preds, samples, targets)

    def mask_rois(self, samples: RoISamples) -> Tensor:
        """The RoIs the mask branch trains on: the first Q slots of each image (N, Q, 4)."""
        return samples.rois[:, :self.mask_slots(samples.rois.shape[1])]

    def mask_loss_of(self, mask_preds: Tensor, samples: RoISamples,
                     targets: DetTargets) -> dict[str, Tensor]:
        """``{"loss_mask"}`` of the mask head's logits (N*Q, K or 1, h, w) for
        :meth:`mask_rois` against each positive's GT mask cropped to its RoI
        (:func:`~detcli.models.roi_heads.mask_branch.mask_loss_of`)."""
        assert self.mask_head is not None and self.train_cfg is not None
        mask_size = self.train_cfg.mask_size  # type: ignore[attr-defined]  # RCNNMaskTrainConfig
        return mask_loss_of(self.mask_head, mask_size, mask_preds, self.mask_rois(samples),
                            samples, targets)

    # ---- inference -------------------------------------------------------------------------

    def predict(self, feats: Sequence[Tensor], proposals: Proposals, images: ImageBatch,
                rescale: bool = True) -> DetectionBatch:
        """Detections of every image, padded to ``test_cfg.max_per_img``; with a mask head
        also their (N, M, h, w) mask probabilities (boxes predicted in network-input pixels,
        segmented, then rescaled: MMDetection's order)."""
        if self.mask_head is None:
            return self.predict_bbox(feats, proposals, images, rescale=rescale)
        dets = self.predict_bbox(feats, proposals, images, rescale=False)
        return with_mask_probs(dets, self.predict_mask_probs(feats, dets), images, rescale)

    def predict_mask_probs(self, feats: Sequence[Tensor], dets: DetectionBatch,
                           **extract_kwargs: Any) -> Tensor:
        """The probability mask of each detection's class: dets (N, M) with boxes in
        network-input pixels -> (N, M, h, w) float32, zeros on empty slots (see
        :func:`segment_detections`). ``extract_kwargs`` go to the mask extractor (the ONNX
        graph's ``dense = True``)."""
        assert self.mask_head is not None

        def class_probs(rois: Tensor, labels: Tensor) -> Tensor:  # (R, 5), (R,) -> (R, h, w)
            return self.mask_head.class_probs(self.mask_forward(feats, rois, **extract_kwargs),
                                              labels)

        return segment_detections(dets, class_probs)

    def predict_bbox(self, feats: Sequence[Tensor], proposals: Proposals, images: ImageBatch,
                      rescale: bool = True) -> DetectionBatch:
        """Box detections of every image, padded to ``test_cfg.max_per_img``.

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
