"""Dense candidates, written once: per-level top-k, decode, score threshold, score factors.

N images, L levels, H_l x W_l the feature map of level l, A anchors per location, K classes,
k_l = min(nms_pre, H_l*W_l*A*K) candidates kept from level l, P = sum_l k_l candidates per
image, M = ``max_per_img`` output slots per image.

MMDetection 2.x semantics (``_get_bboxes_single`` with ``filter_scores_and_topk``): on every
level, sigmoid scores are flattened over (location, anchor, class); the ``nms_pre`` highest are
kept, each names its anchor (index // K) and class (index % K); the anchors' deltas are
decoded and clipped to the image; the levels are concatenated; a candidate is valid when its
score is above ``score_thr``. With score factors (FCOS's and ATSS's centerness, MMDetection's
``score_factors``), each candidate's score is then multiplied by the sigmoid of its prior's
factor -- after the ``score_thr`` test, which sees the classification score alone.

Who calls what:

    head.candidates(outputs, img_shapes)  -> dense_candidates() -> level_candidates() per level
    head.predict  = candidates -> predict_dense(): rescale, min_bbox_size, one batched NMS
    engine/tta.py = candidates of each view -> map back, min_bbox_size, one batched NMS
    export/graph  = candidates(static_k=True, priors from the graph) -> ONNX NMS
    RPN proposals = level_candidates() per level -> levels as NMS classes (proposals.py)

The ONNX graph differs in one place only, the ``static_k`` branch of :func:`level_candidates`
(a level with fewer than k entries is padded so k is a constant whatever the input size), and
in what it passes: priors built from symbolic feature-map sizes, and ``max_shape=None`` (it
clips itself, to the input or to each image's size). ``tests/export/test_graph_parts.py``
compares the two.

Boxes are in original-image pixels after :func:`predict_dense` with ``rescale`` (divided by
the scale factor), else network-input pixels; boxes with a side <= ``min_bbox_size`` are
dropped (MMDetection 3.x; at the default 0 that drops only empty boxes, which 2.x kept); then
NMS (class-aware unless ``nms.class_agnostic``) keeps at most ``max_per_img`` per image.
Everything before NMS is batched over images with fixed shapes (``topk`` with a static k,
masks instead of per-image filtering); NMS runs once for the batch with each image as its own
group (:func:`detcli.task.postprocess.nms_to_batch`).
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import torch
from torch import Tensor

from detcli.structures.batch import ImageBatch
from detcli.structures.dense import Candidates, DenseOutputs
from detcli.structures.detections import DetectionBatch
from detcli.task.postprocess import DenseTestConfig, nms_to_batch


class CandidateSettings(Protocol):
    """What :func:`dense_candidates` reads from a head's test_cfg."""

    nms_pre: int
    score_thr: float


def level_candidates(
    cls_logits: Tensor, bbox_deltas: Tensor, priors: Tensor, bbox_coder: Any, nms_pre: int,
    *, max_shape: Tensor | None = None, static_k: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One level's top candidates -> boxes (N, k, 4), scores (N, k), labels (N, k) and the
    index (N, k) of each candidate's prior.

    cls_logits (N, A*K, H, W), bbox_deltas (N, A*4, H, W), priors (H*W*A, 4) anchors (or
    (H*W, 2+) points). Boxes are decoded, in network-input pixels, and clipped to
    ``max_shape`` (N, 2) of (h, w) when it is given.
    """
    num_images = cls_logits.shape[0]
    num_priors = priors.shape[0]
    num_classes = cls_logits.shape[1] // (bbox_deltas.shape[1] // 4)  # A*K / A: static
    flat_logits = cls_logits.permute(0, 2, 3, 1).reshape(num_images, -1).float()  # (N, H*W*A*K)
    if static_k:
        # ---- ONNX only: k must not depend on the input size -------------------------------
        # A level with fewer than k = nms_pre entries is padded with -inf logits (score 0)
        # pointing at a real prior; nms_pre <= 0 keeps every entry, unsorted.
        if nms_pre > 0:
            filler = flat_logits.new_full((num_images, nms_pre), float("-inf"))  # (N, k)
            padded = torch.cat([flat_logits, filler], dim=1)  # (N, H*W*A*K + k)
            top_logits, top_index = padded.topk(nms_pre, dim=1)  # (N, k) each
        else:
            top_logits = flat_logits  # (N, H*W*A*K): every entry
            top_index = torch.arange(flat_logits.shape[1], device=flat_logits.device).expand(
                num_images, -1)
    else:
        num_flat = flat_logits.shape[1]
        k = num_flat if nms_pre <= 0 else min(nms_pre, num_flat)
        # sigmoid is monotonic: the top logits are the top scores, and only k of them need it
        top_logits, top_index = flat_logits.topk(k, dim=1)  # (N, k) each
    scores = top_logits.sigmoid()  # (N, k)
    prior_index = torch.div(top_index, num_classes, rounding_mode="floor")  # (N, k)
    if static_k:
        prior_index = prior_index.clamp(max=num_priors - 1)  # filler rows point at a real prior
    labels = top_index % num_classes  # (N, k)

    flat_deltas = bbox_deltas.permute(0, 2, 3, 1).reshape(num_images, -1, 4)  # (N, H*W*A, 4)
    deltas = torch.gather(flat_deltas, 1, prior_index[..., None].expand(-1, -1, 4))  # (N, k, 4)
    anchors = priors[prior_index]  # (N, k, 4) anchors, or (N, k, 2+) points
    boxes = bbox_coder.decode(anchors, deltas.float(), max_shape=max_shape)  # (N, k, 4)
    return boxes, scores, labels, prior_index


def level_score_factors(score_factor: Tensor, prior_index: Tensor) -> Tensor:
    """Sigmoid of the factor logits (N, A, H, W) at the candidates' priors (N, k) -> (N, k)."""
    flat = score_factor.permute(0, 2, 3, 1).reshape(score_factor.shape[0], -1)  # (N, H*W*A)
    return torch.gather(flat.float(), 1, prior_index).sigmoid()  # (N, k)


def clip_shapes(img_shapes: Tensor | None, like: Tensor) -> Tensor | None:
    """Image shapes (N, 2) of (h, w) as the ``max_shape`` decoded boxes are clipped to: float32
    on ``like``'s device. None (no clipping) stays None."""
    return None if img_shapes is None else img_shapes.to(device=like.device, dtype=torch.float32)


def dense_candidates(
    outputs: DenseOutputs,
    priors: Sequence[Tensor],
    bbox_coder: Any,
    cfg: CandidateSettings,
    *,
    max_shape: Tensor | None,
    static_k: bool = False,
) -> Candidates:
    """Per-level outputs and priors L x (H_l*W_l*A, 4 or 2+) -> :class:`Candidates` (N, P).

    ``outputs.bbox_deltas`` must already be in the coder's unit (FCOS converts strides to
    pixels first). ``max_shape`` (N, 2) clips each image's boxes; None leaves them unclipped.
    """
    per_level = [
        level_candidates(logits, deltas, level_priors, bbox_coder, cfg.nms_pre,
                         max_shape=max_shape, static_k=static_k)
        for logits, deltas, level_priors in zip(outputs.cls_logits, outputs.bbox_deltas, priors)
    ]
    boxes = torch.cat([b for b, _, _, _ in per_level], dim=1)  # (N, P, 4)
    scores = torch.cat([s for _, s, _, _ in per_level], dim=1)  # (N, P)
    labels = torch.cat([c for _, _, c, _ in per_level], dim=1)  # (N, P)
    valid = scores > cfg.score_thr  # (N, P): the test sees the classification score alone
    if outputs.score_factors is not None:
        factors = torch.cat([level_score_factors(f, index) for f, (_, _, _, index)
                             in zip(outputs.score_factors, per_level)], dim=1)  # (N, P)
        scores = scores * factors
    return Candidates(boxes, scores, labels, valid)


def size_ok(boxes: Tensor, min_bbox_size: float) -> Tensor:
    """(N, P, 4) -> (N, P) bool: both sides longer than ``min_bbox_size``."""
    widths = boxes[..., 2] - boxes[..., 0]  # (N, P)
    heights = boxes[..., 3] - boxes[..., 1]  # (N, P)
    return (widths > min_bbox_size) & (heights > min_bbox_size)


def predict_dense(candidates: Candidates, images: ImageBatch, cfg: DenseTestConfig,
                  rescale: bool = True) -> DetectionBatch:
    """A head's :class:`Candidates` -> detections padded to ``cfg.max_per_img``.

    Boxes are in original-image pixels when ``rescale`` (divided by ``images.scale_factors``),
    else in network-input pixels (module docstring).
    """
    boxes = candidates.boxes  # (N, P, 4)
    if rescale:
        boxes = boxes / images.scale_factors.to(boxes)[:, None, :]  # (N, P, 4) original pixels
    keep = candidates.valid & size_ok(boxes, cfg.min_bbox_size)  # (N, P)
    return nms_to_batch(boxes, candidates.scores, candidates.labels, keep, cfg)
