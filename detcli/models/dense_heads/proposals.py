"""Region proposals from an RPN's outputs: per-level top-k, decode, per-level NMS, padded output.

N images, L levels, H_l x W_l the feature map of level l, A anchors per location, R_l = H_l *
W_l * A anchors of level l, k_l = min(nms_pre, R_l) candidates kept from level l, C = sum_l k_l
candidates per image, B candidates left after the size test in the whole batch, D proposals
kept by NMS, P = ``max_per_img`` proposal slots per image.

MMDetection 2.x semantics (``RPNHead._get_bboxes_single`` and ``_bbox_post_process``): on every
level, the objectness sigmoid is flattened over (location, anchor) in the anchor layout
``(N, A, H, W) -> (N, H, W, A) -> (N, H*W*A)``; the ``nms_pre`` highest are kept (all of them
when ``nms_pre <= 0``); their anchors' deltas are decoded and clipped to the image; the levels
are concatenated; boxes with a side <= ``min_bbox_size`` are dropped; NMS runs within each
(image, level) -- boxes of different levels never suppress each other (MMDetection passes the
level of each box to ``batched_nms`` as its class), unless ``nms.class_agnostic``; the
``max_per_img`` best of each image are kept, by score. There is no score threshold.

Everything before NMS is batched over images with fixed shapes (``topk`` with a static k,
masks instead of per-image filtering); NMS runs once for the whole batch with cluster
``image * L + level``. Proposals are not differentiated (MMDetection detaches them): the whole
function runs under ``torch.no_grad`` and in float32, whatever the dtype of the outputs.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from detcli.errors import DetError
from detcli.models.dense_heads.dense_predict import clip_shapes, level_candidates, size_ok
from detcli.structures.dense import Candidates, DenseOutputs
from detcli.structures.proposals import Proposals
from detcli.task.postprocess import nms_to_batch
from detcli.task.two_stage_cfg import ProposalConfig


def rpn_candidates(
    outputs: DenseOutputs,
    priors: Sequence[Tensor],
    bbox_coder: Any,
    img_shapes: Tensor | None,
    cfg: ProposalConfig,
    *,
    static_k: bool = False,
) -> Candidates:
    """Objectness logits L x (N, A, H_l, W_l), deltas L x (N, A*4, H_l, W_l) and anchors L x
    (H_l*W_l*A, 4) -> the C candidates of every image: boxes decoded (clipped to
    ``img_shapes`` (N, 2) of (h, w) unless None), objectness scores, labels = their level
    (the NMS class of a proposal), all valid."""
    cls_logits, bbox_deltas = outputs.cls_logits, outputs.bbox_deltas
    if not (len(cls_logits) == len(bbox_deltas) == len(priors)):
        raise DetError(f"generate_proposals needs one entry per level in each input; got "
                       f"{len(cls_logits)} logits, {len(bbox_deltas)} deltas, {len(priors)} priors")
    max_shape = clip_shapes(img_shapes, cls_logits[0])  # (N, 2) or None
    boxes, scores, levels = [], [], []
    for level, (logits, deltas, anchors) in enumerate(zip(cls_logits, bbox_deltas, priors)):
        num_anchors, height, width = logits.shape[1:]
        if not static_k and num_anchors * height * width != anchors.shape[0]:
            raise DetError(
                f"level {level}: {num_anchors} objectness logits per location on a {height}x"
                f"{width} map do not match its {anchors.shape[0]} anchors (one sigmoid logit "
                "per anchor expected)")
        # K = 1: the candidates' labels are all 0, each names its anchor directly
        level_boxes, level_scores, _, _ = level_candidates(
            logits, deltas, anchors, bbox_coder, cfg.nms_pre, max_shape=max_shape,
            static_k=static_k)  # (N, k_l, 4), (N, k_l)
        boxes.append(level_boxes)
        scores.append(level_scores)
        levels.append(torch.full_like(level_scores, level, dtype=torch.long))  # (N, k_l)
    scores_cat = torch.cat(scores, dim=1)  # (N, C)
    return Candidates(
        boxes=torch.cat(boxes, dim=1),  # (N, C, 4)
        scores=scores_cat,
        labels=torch.cat(levels, dim=1),  # (N, C) the NMS class of each candidate
        valid=torch.ones_like(scores_cat, dtype=torch.bool),  # (N, C): no score threshold
    )


@torch.no_grad()
def generate_proposals(
    cls_logits: Sequence[Tensor],
    bbox_deltas: Sequence[Tensor],
    priors: Sequence[Tensor],
    bbox_coder: Any,
    img_shapes: Tensor,
    cfg: ProposalConfig,
) -> Proposals:
    """Objectness logits L x (N, A, H_l, W_l), deltas L x (N, A*4, H_l, W_l), anchors L x
    (H_l*W_l*A, 4) and img_shapes (N, 2) of (h, w) -> :class:`Proposals` with exactly
    P = ``cfg.max_per_img`` slots per image, in network-input pixels (module docstring)."""
    candidates = rpn_candidates(DenseOutputs(list(cls_logits), list(bbox_deltas)), priors,
                                bbox_coder, img_shapes, cfg)
    return proposals_from_candidates(candidates, cfg)


@torch.no_grad()
def proposals_from_candidates(candidates: Candidates, cfg: ProposalConfig) -> Proposals:
    """The RPN's :class:`Candidates` -> :class:`Proposals` with exactly P = ``cfg.max_per_img``
    slots per image: the size test, then NMS within each (image, level)."""
    keep = candidates.valid & size_ok(candidates.boxes, cfg.min_bbox_size)  # (N, C)
    # One NMS for the batch, clusters image * L + level. Selecting the B kept candidates and NMS
    # itself have data-dependent sizes: the host syncs there are unavoidable.
    dets = nms_to_batch(candidates.boxes, candidates.scores, candidates.labels, keep,
                        cfg)  # (N, P) slots
    return Proposals(
        boxes=dets.boxes,  # (N, P, 4), zeros on padding
        scores=dets.scores,  # (N, P), descending within each image, zeros on padding
        valid=dets.labels >= 0,  # (N, P): padding slots carry label -1
    )
