"""Dense-head post-processing: per-level top-k, decode, rescale, one batched NMS, padded output.

N images, L levels, H_l x W_l the feature map of level l, A anchors per location, K classes,
k_l = min(nms_pre, H_l*W_l*A*K) candidates kept from level l, P = sum_l k_l candidates per
image, B candidates above ``score_thr`` in the whole batch, D detections kept by NMS, M =
``max_per_img`` output slots per image.

MMDetection 2.x semantics (``_get_bboxes_single`` with ``filter_scores_and_topk``): on every
level, sigmoid scores are flattened over (location, anchor, class); the ``nms_pre`` highest that
are above ``score_thr`` are kept, each names its anchor (index // K) and class (index % K); the
anchors' deltas are decoded and clipped to the image; the levels are concatenated; boxes are
divided by the scale factor (network input -> original image); boxes with a side <=
``min_bbox_size`` are dropped (MMDetection 3.x; at the default 0 that drops only empty boxes,
which 2.x kept); then NMS (class-aware unless ``nms.class_agnostic``) keeps at most
``max_per_img`` per image, by score.

With ``score_factors`` (FCOS's and ATSS's centerness, MMDetection's ``score_factors``), each
kept candidate's score is multiplied by the sigmoid of its prior's factor after the
``score_thr`` test (which sees the classification score alone), before NMS.

Everything before NMS is batched over images with fixed shapes (``topk`` with a static k,
masks instead of per-image filtering), so it exports to ONNX; NMS runs once for the batch with
each image as its own group.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence, Union

import torch
from torch import Tensor

from detcli.structures.batch import ImageBatch
from detcli.structures.detections import DetectionBatch
from detcli.task.postprocess import DenseTestConfig, NMSConfig, SoftNMSConfig, multiclass_nms


class NMSSettingsLike(Protocol):
    """What :func:`nms_to_batch` reads: a dense head's test_cfg, the RPN's proposal config or
    the RoI head's ``test_cfg.rcnn``."""

    nms: Union[NMSConfig, SoftNMSConfig]
    max_per_img: int


def level_candidates(
    cls_logits: Tensor, bbox_deltas: Tensor, priors: Tensor, bbox_coder: Any,
    img_shapes: Tensor, nms_pre: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One level's top candidates -> boxes (N, k, 4), scores (N, k), labels (N, k) and the
    index (N, k) of each candidate's prior.

    cls_logits (N, A*K, H, W), bbox_deltas (N, A*4, H, W), priors (H*W*A, 4) anchors (or
    (H*W, 2+) points), img_shapes (N, 2) of (h, w). Boxes are decoded and clipped to each
    image, in network-input pixels.
    """
    num_images = cls_logits.shape[0]
    num_priors = priors.shape[0]
    num_classes = cls_logits.shape[1] * cls_logits.shape[2] * cls_logits.shape[3] // num_priors
    flat_logits = cls_logits.permute(0, 2, 3, 1).reshape(num_images, -1)  # (N, H*W*A*K)
    num_flat = flat_logits.shape[1]
    k = num_flat if nms_pre <= 0 else min(nms_pre, num_flat)
    # sigmoid is monotonic: the top logits are the top scores, and only k of them need it
    top_logits, top_index = flat_logits.float().topk(k, dim=1)  # (N, k) each
    scores = top_logits.sigmoid()  # (N, k)
    prior_index = torch.div(top_index, num_classes, rounding_mode="floor")  # (N, k)
    labels = top_index % num_classes  # (N, k)

    flat_deltas = bbox_deltas.permute(0, 2, 3, 1).reshape(num_images, -1, 4)  # (N, H*W*A, 4)
    deltas = torch.gather(flat_deltas, 1, prior_index[..., None].expand(-1, -1, 4))  # (N, k, 4)
    anchors = priors[prior_index]  # (N, k, 4)
    boxes = bbox_coder.decode(anchors, deltas.float(), max_shape=img_shapes)  # (N, k, 4)
    return boxes, scores, labels, prior_index


def level_score_factors(score_factor: Tensor, prior_index: Tensor) -> Tensor:
    """Sigmoid of the factor logits (N, A, H, W) at the candidates' priors (N, k) -> (N, k)."""
    flat = score_factor.permute(0, 2, 3, 1).reshape(score_factor.shape[0], -1)  # (N, H*W*A)
    return torch.gather(flat.float(), 1, prior_index).sigmoid()  # (N, k)


def predict_dense(
    cls_logits: Sequence[Tensor],
    bbox_deltas: Sequence[Tensor],
    priors: Sequence[Tensor],
    bbox_coder: Any,
    images: ImageBatch,
    cfg: DenseTestConfig,
    rescale: bool = True,
    score_factors: Sequence[Tensor] | None = None,
) -> DetectionBatch:
    """Per-level outputs L x (N, A*K, H_l, W_l) and L x (N, A*4, H_l, W_l), priors L x
    (H_l*W_l*A, 4) -> detections padded to ``cfg.max_per_img``.

    Boxes are in original-image pixels when ``rescale`` (divided by ``images.scale_factors``),
    else in network-input pixels. ``score_factors``: L x (N, A, H_l, W_l) logits whose sigmoid
    multiplies the scores after the ``score_thr`` test (module docstring).
    """
    img_shapes = images.img_shapes.to(cls_logits[0].device, torch.float32)  # (N, 2)
    per_level = [
        level_candidates(logits, deltas, anchors, bbox_coder, img_shapes, cfg.nms_pre)
        for logits, deltas, anchors in zip(cls_logits, bbox_deltas, priors)
    ]
    boxes = torch.cat([b for b, _, _, _ in per_level], dim=1)  # (N, P, 4)
    scores = torch.cat([s for _, s, _, _ in per_level], dim=1)  # (N, P)
    labels = torch.cat([c for _, _, c, _ in per_level], dim=1)  # (N, P)
    if rescale:
        boxes = boxes / images.scale_factors.to(boxes)[:, None, :]  # (N, P, 4) original pixels
    widths = boxes[..., 2] - boxes[..., 0]  # (N, P)
    heights = boxes[..., 3] - boxes[..., 1]  # (N, P)
    keep = (scores > cfg.score_thr) & (widths > cfg.min_bbox_size) & (heights > cfg.min_bbox_size)
    if score_factors is not None:
        factors = torch.cat([level_score_factors(f, index) for f, (_, _, _, index)
                             in zip(score_factors, per_level)], dim=1)  # (N, P)
        scores = scores * factors
    return nms_to_batch(boxes, scores, labels, keep, cfg)


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
