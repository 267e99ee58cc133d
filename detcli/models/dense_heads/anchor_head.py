"""The anchor-based dense head base: targets, loss and prediction shared by RetinaNet-like heads.

N images, L levels, H_l x W_l the feature map of level l, A anchors per location, K classes,
R = sum_l H_l * W_l * A priors per image, G GT slots per image (padding slots have label -1).

Call graph (a subclass writes ``forward`` and its layers; it satisfies
:class:`detcli.models.protocols.DenseHead`):

    loss(outputs, images, targets):    flatten_levels() -> get_targets() -> losses
    candidates(outputs, img_shapes):   dense_predict.dense_candidates()
    predict(outputs, images, rescale): candidates() -> dense_predict.predict_dense()
    training_rule():                   the sampler and normaliser get_targets() uses
    explain_assignment(outputs, images, targets): assign_and_sample() -> Assignment, as loss()

``outputs`` is what ``forward(feats)`` returned, a
:class:`~detcli.structures.dense.DenseOutputs`: per level, classification logits (N, A*K, H_l, W_l)
and box deltas (N, A*4, H_l, W_l). Flattened, they follow the anchor layout of
:mod:`detcli.task.prior_generators.anchor_generator`: (level, y, x, anchor), i.e.
``(N, A*C, H, W) -> (N, H, W, A*C) -> (N, H*W*A, C)``, levels concatenated.

Target codes: ``labels`` in [0, K) for positives and ``K`` (background) for negatives and for
ignored priors, whose ``label_weights`` are 0. The whole batch is assigned by one assigner call
on padded (N, G) GT; nothing in a training step loops over images or anchors or syncs with
the host.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch
from torch import Tensor, nn

from detcli.errors import ConfigError, DetError
from detcli.models.dense_heads.dense_predict import clip_shapes, dense_candidates, predict_dense
from detcli.models.losses import FocalLoss
from detcli.models.protocols import AssignmentSetup, TrainingRule
from detcli.registry import ASSIGNERS, SAMPLERS
from detcli.structures.assignment import Assignment, build_assignment
from detcli.structures.batch import DetTargets, ImageBatch
from detcli.structures.dense import Candidates, DenseOutputs
from detcli.structures.detections import DetectionBatch
from detcli.task.assigners.assign_result import AssignResult
from detcli.task.postprocess import DenseTestConfig
from detcli.task.prior_generators.anchor_generator import anchor_inside_flags
from detcli.task.samplers.pseudo_sampler import PseudoSamplerConfig
from detcli.task.samplers.sampling_result import SamplingResult
from detcli.task.train_cfg import DenseTrainConfig

log = logging.getLogger(__name__)


@dataclass
class AnchorTargets:
    """Training targets of every prior of every image."""

    labels: Tensor  # (N, R) int64: [0, K) positive, K background or ignored
    label_weights: Tensor  # (N, R) float: 0 for ignored priors, pos_weight on positives
    bbox_targets: Tensor  # (N, R, 4): deltas (boxes with reg_decoded_bbox); 0 off positives
    bbox_weights: Tensor  # (N, R) float: 1 on positives, else 0
    num_pos: Tensor  # (N,) int64
    avg_factor: Tensor  # () float: the loss normaliser, kept on the device


def flatten_levels(per_level: Sequence[Tensor], channels: int) -> Tensor:
    """L x (N, A*C, H_l, W_l) -> (N, R, C) in the anchor layout (level, y, x, anchor)."""
    num_images = per_level[0].shape[0]
    flat = [
        x.permute(0, 2, 3, 1).reshape(num_images, -1, channels)  # (N, H, W, A*C) -> (N, H*W*A, C)
        for x in per_level
    ]
    return torch.cat(flat, dim=1)  # (N, R, C)


class AnchorHead(nn.Module):
    """Shared anchor-head logic. Subclasses build their layers and implement ``forward``.

    ``train_cfg`` (assigner, sampler, ``allowed_border``, ``pos_weight``) is needed by
    :meth:`loss` only, ``test_cfg`` (``nms_pre``, ``score_thr``, ``nms``, ``max_per_img``) by
    :meth:`predict` only.

    ``generator_key`` names the head config's field that configures ``prior_generator`` (for
    reports and ``--set`` hints); a subclass whose config names it otherwise says so.
    """

    makes_proposals: ClassVar[bool] = False  # DenseHead: RPNHead's outputs are proposals
    generator_key: ClassVar[str] = "anchor_generator"

    def __init__(
        self,
        *,
        num_classes: int,
        prior_generator: Any,
        bbox_coder: Any,
        loss_cls: nn.Module,
        loss_bbox: nn.Module,
        reg_decoded_bbox: bool = False,
        train_cfg: DenseTrainConfig | None = None,
        test_cfg: DenseTestConfig | None = None,
    ) -> None:
        super().__init__()  # num_classes >= 1 is each head config's check
        if not getattr(loss_cls, "use_sigmoid", False):
            raise ConfigError(
                f"{type(self).__name__} needs a sigmoid classification loss (K logits, no "
                f"background column); got {type(loss_cls).__name__} with use_sigmoid = false")
        self.num_classes = num_classes
        self.prior_generator = prior_generator
        self.bbox_coder = bbox_coder
        self.loss_cls = loss_cls
        self.loss_bbox = loss_bbox
        self.reg_decoded_bbox = reg_decoded_bbox
        # The focal loss weighs easy negatives down itself: a head using it keeps every
        # assigned prior (PseudoSampler) and normalises by positives only (MMDetection's
        # `sampling`); any other classification loss samples (train_cfg.sampler).
        self.sampling = not isinstance(loss_cls, FocalLoss)
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg if test_cfg is not None else DenseTestConfig()
        self.assigner = self.sampler = None
        if train_cfg is not None:
            self.assigner = ASSIGNERS.build(train_cfg.assigner)
            self.sampler = SAMPLERS.build(self._sampler_config(train_cfg))

    @property
    def num_base_priors(self) -> int:
        """A: anchors per location (the same on every level, as the conv layout requires)."""
        counts = set(self.prior_generator.num_base_priors)
        if len(counts) != 1:
            raise ConfigError(f"{type(self).__name__} needs the same number of anchors on every "
                              f"level, got {self.prior_generator.num_base_priors}")
        return counts.pop()

    def training_rule(self) -> TrainingRule:
        """The sampler ``get_targets`` runs and what the losses are divided by: with
        ``sampling``, ``train_cfg.sampler`` and the sampled positives plus negatives; without,
        the PseudoSampler and the positives."""
        if not self.sampling:
            return TrainingRule(sampler="PseudoSampler", normaliser="positives")
        if self.train_cfg is None:
            raise DetError(f"{type(self).__name__} samples with train_cfg.sampler, but the model "
                           "was built with train_cfg = false")
        return TrainingRule(sampler=self.train_cfg.sampler.type,
                            normaliser="positives_and_negatives")

    def assignment_setup(self) -> AssignmentSetup:
        """The anchors, the configured assigner and ``allowed_border`` (needs a train_cfg)."""
        if self.train_cfg is None:
            raise DetError(f"{type(self).__name__} assigns with train_cfg.assigner, but the "
                           "model was built with train_cfg = false")
        return AssignmentSetup(prior_boxes=self.prior_generator, assigner=self.assigner,
                               generator_key=self.generator_key,
                               assigner_cfg=self.train_cfg.assigner,
                               allowed_border=self.train_cfg.allowed_border)

    def _sampler_config(self, train_cfg: DenseTrainConfig) -> Any:
        if self.sampling:
            if getattr(train_cfg.sampler, "add_gt_as_proposals", False):
                raise ConfigError(
                    "a dense head cannot use sampler.add_gt_as_proposals = true (its priors "
                    "are fixed anchors); set it to false")
            return train_cfg.sampler
        if train_cfg.sampler.type != "PseudoSampler":
            log.warning("%s uses %s, which keeps every prior: train_cfg.sampler %s is not used",
                        type(self).__name__, type(self.loss_cls).__name__, train_cfg.sampler.type)
        return PseudoSamplerConfig()

    def forward(self, feats: Sequence[Tensor]) -> DenseOutputs:  # pragma: no cover - abstract
        raise NotImplementedError

    def level_priors(self, outputs: DenseOutputs) -> list[Tensor]:
        """Priors per level, L x (H_l*W_l*A, 4), for the feature-map sizes of ``outputs``."""
        logits = outputs.cls_logits
        sizes = [(x.shape[-2], x.shape[-1]) for x in logits]
        return self.prior_generator.grid_priors(sizes, device=logits[0].device)

    # ---- training --------------------------------------------------------------------------

    def loss(self, outputs: DenseOutputs, images: ImageBatch,
             targets: DetTargets) -> dict[str, Tensor]:
        """``{"loss_cls": (), "loss_bbox": ()}``, divided as :meth:`training_rule` says."""
        priors_per_level = self.level_priors(outputs)
        priors = torch.cat(priors_per_level, dim=0)  # (R, 4)
        cls_logits = flatten_levels(outputs.cls_logits, self.num_classes)  # (N, R, K)
        bbox_deltas = flatten_levels(outputs.bbox_deltas, 4)  # (N, R, 4)
        sizes = [(x.shape[-2], x.shape[-1]) for x in outputs.cls_logits]
        tgt = self.get_targets(priors, sizes, images, targets)

        loss_cls = self.loss_cls(
            cls_logits.reshape(-1, self.num_classes),  # (N*R, K)
            tgt.labels.reshape(-1),  # (N*R,)
            tgt.label_weights.reshape(-1),  # (N*R,)
            avg_factor=tgt.avg_factor,
        )
        if self.reg_decoded_bbox:  # e.g. GIoU: the loss compares boxes, not deltas
            bbox_pred = self.bbox_coder.decode(priors, bbox_deltas.float())  # (N, R, 4)
        else:
            bbox_pred = bbox_deltas
        loss_bbox = self.loss_bbox(
            bbox_pred.reshape(-1, 4),  # (N*R, 4)
            tgt.bbox_targets.reshape(-1, 4),  # (N*R, 4)
            tgt.bbox_weights.reshape(-1),  # (N*R,)
            avg_factor=tgt.avg_factor,
        )
        return {"loss_cls": loss_cls, "loss_bbox": loss_bbox}

    @torch.no_grad()
    def assign_and_sample(self, priors: Tensor, featmap_sizes: Sequence[tuple[int, int]],
                          images: ImageBatch, targets: DetTargets,
                          generator: torch.Generator | None = None
                          ) -> tuple[AssignResult, SamplingResult]:
        """The whole batch's assignment and sampling, priors (R, 4): what :meth:`get_targets`
        and :meth:`explain_assignment` share. ``generator``: the sampler's random draws."""
        if self.assigner is None or self.sampler is None or self.train_cfg is None:
            raise DetError(f"{type(self).__name__}.loss needs a train_cfg (assigner, sampler); "
                           "the model was built with train_cfg = false")
        num_images = targets.labels.shape[0]
        if num_images != len(images):
            raise DetError(
                f"targets hold {num_images} images but the image batch has {len(images)}")
        gt_boxes = targets.boxes.to(priors)  # (N, G, 4)
        gt_labels = targets.labels  # (N, G)
        inside = self.inside_flags(priors, featmap_sizes, images)  # (N, R) bool; None: all
        levels = {}  # an assigner that picks priors level by level (ATSS) is told the levels
        if self.assigner.needs_num_level_priors:
            levels["num_level_priors"] = [h * w * self.num_base_priors for h, w in featmap_sizes]
        assign = self.assigner.assign(
            priors, gt_boxes, gt_labels, targets.ignore_boxes.to(priors), targets.ignore_valid,
            prior_valid=inside, **levels)
        return assign, self.sampler.sample(assign, priors, gt_boxes, gt_labels,
                                           generator=generator)

    @torch.no_grad()
    def get_targets(self, priors: Tensor, featmap_sizes: Sequence[tuple[int, int]],
                    images: ImageBatch, targets: DetTargets) -> AnchorTargets:
        """Assign and sample the whole batch at once: priors (R, 4) -> :class:`AnchorTargets`."""
        assign, sampled = self.assign_and_sample(priors, featmap_sizes, images, targets)
        gt_boxes = targets.boxes.to(priors)  # (N, G, 4)
        pos, neg = sampled.pos_mask, sampled.neg_mask  # (N, R) each

        labels = torch.where(pos, assign.labels, self.num_classes)  # (N, R)
        pos_weight = self.train_cfg.pos_weight if self.train_cfg.pos_weight > 0 else 1.0
        label_weights = pos.float() * pos_weight + neg.float()  # (N, R)
        bbox_targets = self._bbox_targets(priors, gt_boxes, assign.gt_index, pos)  # (N, R, 4)

        num_pos = sampled.num_pos  # (N,)
        # MMDetection 2.x: every image counts at least one positive (and one negative)
        avg_factor = num_pos.clamp(min=1).sum()
        if self.sampling:
            avg_factor = avg_factor + sampled.num_neg.clamp(min=1).sum()
        return AnchorTargets(labels, label_weights, bbox_targets, pos.float(), num_pos,
                             avg_factor.float())

    @torch.no_grad()
    def explain_assignment(self, outputs: DenseOutputs, images: ImageBatch,
                           targets: DetTargets,
                           generator: torch.Generator | None = None) -> Assignment:
        """What :meth:`loss` assigns and samples for ``targets``, prior by prior: the same
        priors, assigner and sampler (``generator``: the sampler's random draws)."""
        priors_per_level = self.level_priors(outputs)  # L x (H_l*W_l*A, 4)
        priors = torch.cat(priors_per_level, dim=0)  # (R, 4)
        level = torch.cat([torch.full((p.shape[0],), i, dtype=torch.long, device=priors.device)
                           for i, p in enumerate(priors_per_level)])  # (R,)
        sizes = [(x.shape[-2], x.shape[-1]) for x in outputs.cls_logits]
        assign, sampled = self.assign_and_sample(priors, sizes, images, targets, generator)
        return build_assignment(priors, level, targets.boxes.to(priors), assign.gt_index,
                                assign.labels, assign.max_iou, sampled.pos_mask,
                                sampled.neg_mask)

    def _bbox_targets(self, priors: Tensor, gt_boxes: Tensor, gt_index: Tensor,
                      pos: Tensor) -> Tensor:
        """Encoded matched GT of every positive prior, zeros elsewhere: (N, R, 4)."""
        num_images, num_priors = pos.shape
        anchors = priors.expand(num_images, num_priors, 4)  # (N, R, 4)
        if gt_boxes.shape[1] == 0:  # no GT anywhere in the batch: nothing is positive
            return torch.zeros_like(anchors)
        index = gt_index.clamp(min=0)[..., None].expand(-1, -1, 4)  # (N, R, 4)
        matched = torch.gather(gt_boxes, 1, index)  # (N, R, 4)
        # Non-positives get their own anchor as a stand-in, so encoding stays finite.
        matched = torch.where(pos[..., None], matched, anchors)
        if self.reg_decoded_bbox:
            encoded = matched
        else:
            encoded = self.bbox_coder.encode(anchors, matched)  # (N, R, 4)
        return torch.where(pos[..., None], encoded, torch.zeros_like(encoded))

    def inside_flags(self, priors: Tensor, featmap_sizes: Sequence[tuple[int, int]],
                     images: ImageBatch) -> Tensor | None:
        """(N, R) bool: anchors on each image's own padded area and within ``allowed_border``.

        None when every anchor counts (every image fills the batch and ``allowed_border < 0``),
        which skips the work. An image's own padded size is ``metas[i]["pad_shape"]`` when the
        data pipeline recorded it (MMDetection's valid flags), else the batch's.
        """
        assert self.train_cfg is not None
        allowed_border = self.train_cfg.allowed_border
        if allowed_border < 0 and images.fills_batch:  # host data: no device read
            return None
        device = priors.device
        valid = torch.cat(self.prior_generator.valid_flags(
            featmap_sizes, images.pad_shapes.to(device)), dim=1)  # (N, R)
        return anchor_inside_flags(priors, valid, images.img_shapes.to(device), allowed_border)

    # ---- inference -------------------------------------------------------------------------

    def candidates(self, outputs: DenseOutputs, img_shapes: Tensor | None,
                   priors: Sequence[Tensor] | None = None,
                   static_k: bool = False) -> Candidates:
        """Boxes before NMS (N, P), in network-input pixels, clipped to ``img_shapes`` (N, 2)
        unless None; ``priors`` default to the anchors of ``outputs``' feature-map sizes."""
        if priors is None:
            priors = self.level_priors(outputs)
        return dense_candidates(outputs, priors, self.bbox_coder, self.test_cfg,
                                max_shape=clip_shapes(img_shapes, outputs.cls_logits[0]),
                                static_k=static_k)

    def predict(self, outputs: DenseOutputs, images: ImageBatch,
                rescale: bool = True) -> DetectionBatch:
        """Detections of every image, padded to ``test_cfg.max_per_img``.

        Boxes are in original-image pixels with ``rescale`` (else network-input pixels).
        """
        return predict_dense(self.candidates(outputs, images.img_shapes), images,
                             self.test_cfg, rescale=rescale)
