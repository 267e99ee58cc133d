"""A RoI head's mask branch (Mask R-CNN's; MMDetection 3.3's ``mask_loss`` / ``predict_mask``):
the config check that joins the mask head to its extractor, which sampled RoIs the branch
trains on, its loss against the GT masks cropped to them, and the test-time segmentation of
the detections. :class:`~detcli.models.roi_heads.standard_roi_head.StandardRoIHead` and each
stage of :class:`~detcli.models.roi_heads.cascade_roi_head.CascadeRoIHead` call these; the
extractor and the mask head stay modules of the head.

N images, S sampled slots per image, Q mask slots per image (the sampler's positive budget:
every positive is among them, because positives come first), M detection slots per image,
K classes, h x w the mask head's output size.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch
from torch import Tensor, nn

from detcli.config.schema import Schema, derive_or_check
from detcli.errors import ConfigError, DataError
from detcli.models.roi_heads.mask_target import mask_targets
from detcli.models.roi_heads.roi_extractor import check_pooled_size
from detcli.models.roi_heads.rois import RoISamples, batch_rois
from detcli.structures.batch import DetTargets, ImageBatch
from detcli.structures.detections import DetectionBatch

NEEDS_MASK_SIZE = ("a roi_head with a mask_head trains on mask targets of "
                   "train_cfg.rcnn.mask_size pixels; build it with a Mask R-CNN train_cfg "
                   "(model.type = \"MaskRCNN\")")


def check_mask_branch(mask_head: Schema, extractor: Schema, extractor_key: str) -> None:
    """The mask head reads the features ``extractor`` (the config at
    ``model.roi_head.{extractor_key}``: the mask extractor, or the shared box extractor) pools:
    its ``roi_feat_size`` must be their pooled size (ValueError naming both keys) and its
    ``in_channels`` their channels (derived when unset)."""
    check_pooled_size(extractor, mask_head, extractor_key, "mask_head", "the mask head reads")
    channels = getattr(extractor, "out_channels", None)
    if channels is not None:
        derive_or_check(
            mask_head, "in_channels", channels,
            f"model.roi_head.{extractor_key} ({extractor.type} out_channels {channels})",
            "model.roi_head.mask_head.in_channels")


def mask_slots(max_pos: int | None, num_slots: int) -> int:
    """Q, the RoI slots of each image the mask branch trains on: the sampler's positive budget
    ``max_pos`` (the Sampler protocol's; None: no budget, every slot), which no image's
    positives exceed and which come first in its slots. A fixed number, so the branch's shapes
    do not depend on the data."""
    return num_slots if max_pos is None else min(int(max_pos), num_slots)


def mask_loss_of(mask_head: nn.Module, mask_size: int, mask_preds: Tensor, rois: Tensor,
                 samples: RoISamples, targets: DetTargets) -> dict[str, Tensor]:
    """``{"loss_mask"}`` of the mask head's logits (N*Q, K or 1, h, w) for ``rois`` (N, Q, 4),
    the first Q slots of ``samples``, against each positive's GT mask cropped to its RoI
    (``mask_size`` x ``mask_size``, ``train_cfg.rcnn.mask_size``); the other slots weigh 0.
    DataError when the batch has no GT masks, ConfigError when the head's output size is not
    ``mask_size``."""
    if targets.masks is None:
        raise DataError(
            "Mask R-CNN trains on GT masks but the batch has none (DetTargets.masks is "
            "None): load them in the train pipeline with LoadAnnotations(with_mask = true)")
    if tuple(mask_preds.shape[-2:]) != (mask_size, mask_size):
        raise ConfigError(
            f"the mask head predicts {tuple(mask_preds.shape[-2:])} masks but "
            f"train_cfg.rcnn.mask_size is {mask_size}: set mask_size to the head's "
            "roi_feat_size times its upsample scale_factor")
    slots = rois.shape[1]
    gt_masks = targets.masks.to(rois.device)
    crops = mask_targets(gt_masks, rois, samples.gt_index[:, :slots],
                         (mask_size, mask_size))  # (N, Q, h, w)
    return mask_head.loss(mask_preds, crops.flatten(0, 1),
                          samples.labels[:, :slots].reshape(-1),  # (N*Q,)
                          samples.pos[:, :slots].reshape(-1).float())  # (N*Q,)


def segment_detections(dets: DetectionBatch,
                       class_probs: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """dets (N, M) with boxes in network-input pixels -> (N, M, h, w) float32: each
    detection's mask probability, ``class_probs(rois (R, 5), labels (R,)) -> (R, h, w)``, zeros
    on empty slots (a mask branch's test-time step: Mask R-CNN's head, Cascade Mask R-CNN's
    average over its stages).

    Only the slots up to the fullest image's detection count are segmented (one host sync at
    test time); an exported graph segments all M.
    """
    num_images, num_slots = dets.labels.shape
    used = num_slots
    if not (torch.compiler.is_exporting() or torch.jit.is_tracing()) and num_slots > 0:
        used = max(int(dets.num_dets.max()), 1)
    boxes, labels = dets.boxes[:, :used].float(), dets.labels[:, :used]  # (N, U, 4), (N, U)
    probs = class_probs(batch_rois(boxes), labels.reshape(-1))  # (N*U, h, w)
    probs = probs.view(num_images, used, *probs.shape[1:]) \
        * (labels >= 0)[..., None, None]  # (N, U, h, w)
    if used < num_slots:
        pad = probs.new_zeros(num_images, num_slots - used, *probs.shape[2:])
        probs = torch.cat([probs, pad], dim=1)
    return probs  # (N, M, h, w)


def with_mask_probs(dets: DetectionBatch, mask_probs: Tensor, images: ImageBatch,
                    rescale: bool) -> DetectionBatch:
    """Detections in network-input pixels with their (N, M, h, w) mask probabilities, the
    boxes divided by the scale factors with ``rescale`` (MMDetection segments before it
    rescales)."""
    dets = replace(dets, mask_probs=mask_probs)
    if rescale:
        factors = images.scale_factors.to(dets.boxes)[:, None, :]  # (N, 1, 4)
        dets = replace(dets, boxes=dets.boxes / factors)  # (N, M, 4) original pixels
    return dets
