"""Test-time settings of dense heads and the one batched NMS every detector runs.

B candidate boxes for a whole batch (already score-filtered and decoded), N images, K classes,
D kept boxes, P candidates per image, M = ``max_per_img`` output slots per image. ``group``
(B,) is each box's image index; boxes of different images never suppress each other, and,
unless ``class_agnostic``, neither do boxes of different classes.

:func:`nms_to_batch` is where every eager NMS of the package happens: dense predictions, RPN
proposals (levels as classes), the RoI head's detections, test-time augmentation's merge and
the ONNX runtime's ``--no-nms`` candidates. It calls :func:`multiclass_nms`, which calls
:mod:`detcli.ops.nms`. (The ONNX graph runs the ONNX operator instead: :mod:`detcli.export.nms_op`.)

Config names follow MMDetection 2.x's ``test_cfg`` of a dense head::

    [model.bbox_head.test_cfg]
    nms_pre = 1000
    score_thr = 0.05
    nms = { type = "nms", iou_threshold = 0.5 }
    max_per_img = 100
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Protocol, Union

import torch
from pydantic import Field
from torch import Tensor

from detcli.config.schema import Schema
from detcli.ops.nms import batched_nms, batched_soft_nms
from detcli.structures.detections import DetectionBatch

UnitFloat = Annotated[float, Field(ge=0, le=1)]


class NMSConfig(Schema):
    """Hard NMS: drop a box whose IoU with a higher-scoring kept box is above the threshold."""

    type: Literal["nms"] = "nms"
    iou_threshold: UnitFloat = 0.5
    class_agnostic: bool = False


class SoftNMSConfig(Schema):
    """Soft-NMS (MMCV semantics): decay overlapping scores instead of dropping boxes."""

    type: Literal["soft_nms"] = "soft_nms"
    iou_threshold: UnitFloat = 0.3  # used by "linear" only
    sigma: float = Field(0.5, gt=0)  # used by "gaussian" only
    method: Literal["gaussian", "linear"] = "linear"
    min_score: float = Field(1e-3, ge=0)
    class_agnostic: bool = False


NMSSettings = Annotated[Union[NMSConfig, SoftNMSConfig], Field(discriminator="type")]


class DenseTestConfig(Schema):
    """MMDetection's ``test_cfg`` of a dense (one-stage) head."""

    nms_pre: int = Field(1000, ge=-1)  # top-scoring candidates kept per level before NMS; -1: all
    min_bbox_size: float = Field(0, ge=0)  # drop decoded boxes with a side <= this (pixels)
    score_thr: UnitFloat = 0.05  # drop candidates scoring at or below this
    nms: NMSSettings = Field(default_factory=NMSConfig)
    max_per_img: int = Field(100, gt=0)  # detections kept per image after NMS


def multiclass_nms(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    group: Optional[Tensor],
    cfg: Union[NMSConfig, SoftNMSConfig],
    max_per_img: Optional[int] = None,
) -> tuple[Tensor, Tensor]:
    """NMS of every (image, class) cluster at once -> (keep (D,) int64, scores (D,) float32).

    boxes (B, 4), scores (B,), labels (B,) int64 in [0, K), group (B,) int64 image index or
    None (one image). ``keep`` indexes the B inputs, sorted by image, then by score (highest
    first); ``scores`` are the kept boxes' scores (rescored by soft-NMS). At most
    ``max_per_img`` boxes per image are kept (None: no cap). Hard NMS does not loop over
    images or classes in Python: clusters are ``image * K + label``.
    """
    device = boxes.device
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=device), torch.empty(0, device=device)
    if group is None:
        group = torch.zeros_like(labels)
    if cfg.class_agnostic:
        idxs = group
    else:
        idxs = group * (labels.max() + 1) + labels  # (B,) cluster id; stays on device
    if isinstance(cfg, SoftNMSConfig):
        keep, kept_scores = batched_soft_nms(
            boxes, scores, idxs, iou_threshold=cfg.iou_threshold, sigma=cfg.sigma,
            method=cfg.method, min_score=cfg.min_score)
    else:
        keep = batched_nms(boxes, scores, idxs, cfg.iou_threshold)  # (D,) by score, descending
        kept_scores = scores[keep].float()
    # Regroup by image; the stable sort keeps the score order within each image.
    order = torch.sort(group[keep], stable=True).indices  # (D,)
    keep, kept_scores = keep[order], kept_scores[order]
    if max_per_img is not None:
        kept_group = group[keep]  # (D,) ascending
        first = torch.searchsorted(kept_group, kept_group)  # (D,) where each image's run starts
        rank = torch.arange(keep.shape[0], device=device) - first  # (D,) rank within its image
        within = rank < max_per_img
        keep, kept_scores = keep[within], kept_scores[within]
    return keep, kept_scores


class NMSSettingsLike(Protocol):
    """What :func:`nms_to_batch` reads: a dense head's test_cfg, the RPN's proposal config or
    the RoI head's ``test_cfg.rcnn``."""

    nms: Union[NMSConfig, SoftNMSConfig]
    max_per_img: int


def nms_to_batch(boxes: Tensor, scores: Tensor, labels: Tensor, keep: Tensor,
                 cfg: NMSSettingsLike) -> DetectionBatch:
    """One NMS over the candidates ``keep`` marks, (N, P, ...) -> DetectionBatch (N, M).

    Two host syncs on CUDA, fixed whatever N, P or the number of classes: the candidates
    ``keep`` marks are found once (one ``nonzero``), and NMS returns a data-dependent count.
    The cap of M per image needs no third: detections past it are written to a spare row.
    """
    num_images, num_cands = keep.shape
    max_per_img = cfg.max_per_img
    device = boxes.device
    flat = torch.nonzero(keep.reshape(-1)).squeeze(1)  # (B,) by image, then candidate
    cand_boxes = boxes.reshape(-1, 4)[flat]  # (B, 4)
    cand_scores = scores.reshape(-1)[flat]  # (B,)
    cand_labels = labels.reshape(-1)[flat]  # (B,)
    cand_images = torch.div(flat, num_cands, rounding_mode="floor")  # (B,)
    kept, kept_scores = multiclass_nms(cand_boxes, cand_scores, cand_labels, cand_images,
                                       cfg.nms)  # (D,) by image, then score
    kept_images = cand_images[kept]  # (D,) ascending

    found = torch.zeros(num_images, dtype=torch.long, device=device).scatter_add(
        0, kept_images, torch.ones_like(kept_images))  # (N,) detections per image
    starts = found.cumsum(0) - found  # (N,) first row of each image in the kept list
    rank = torch.arange(kept.shape[0], device=device) - starts[kept_images]  # (D,)
    spare = num_images * max_per_img  # the row that takes every detection past the cap
    slot = torch.where(rank < max_per_img, kept_images * max_per_img + rank, spare)  # (D,)

    out_boxes = boxes.new_zeros(spare + 1, 4)
    out_scores = scores.new_zeros(spare + 1)
    out_labels = labels.new_full((spare + 1,), -1)
    out_boxes[slot] = cand_boxes[kept]
    out_scores[slot] = kept_scores.to(out_scores)
    out_labels[slot] = cand_labels[kept]
    return DetectionBatch(
        boxes=out_boxes[:spare].view(num_images, max_per_img, 4),  # (N, M, 4)
        scores=out_scores[:spare].view(num_images, max_per_img),  # (N, M)
        labels=out_labels[:spare].view(num_images, max_per_img),  # (N, M)
        num_dets=found.clamp(max=max_per_img),  # (N,)
    )
