"""What a dense head's network computes, and the candidates it hands to NMS.

N images, L levels, H_l x W_l the feature map of level l, A priors per location (anchors, or 1
for a point), K classes, P candidates per image.

:class:`DenseOutputs` is every dense head's ``forward`` result (RetinaNet, ATSS, FCOS, the
RPN): the raw per-level maps, nothing decoded. It is a tuple so that tracing, ``torch.compile``
and ``torch.export`` see its tensors directly.

:class:`Candidates` is what a head's ``candidates`` makes of them: per image, the boxes the
head proposes before NMS (the per-level top-k decoded, in network-input pixels), their scores
and labels, and which of them pass the head's score threshold. Prediction, test-time
augmentation and the ONNX graph all start from it (:mod:`detcli.models.dense_heads.dense_predict`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from detcli.structures.detections import DetectionBatch


class DenseOutputs(NamedTuple):
    """Raw per-level outputs of a dense head.

    ``bbox_deltas`` are the head's encoded boxes: deltas from anchors (RetinaNet, ATSS, RPN)
    or distances from points (FCOS, in the head's own unit: ``FCOSHead.distances_in_pixels``).
    ``score_factors``: logits whose sigmoid multiplies the class scores at test time (FCOS's
    and ATSS's centerness); None for a head without one.
    """

    cls_logits: list[Tensor]  # L x (N, A*K, H_l, W_l); the RPN's K = 1 objectness
    bbox_deltas: list[Tensor]  # L x (N, A*4, H_l, W_l)
    score_factors: list[Tensor] | None = None  # L x (N, A, H_l, W_l), or None


class Candidates(NamedTuple):
    """One batch's boxes before NMS, P per image (a fixed number: nothing is filtered yet).

    ``scores`` already include the score factor (centerness); ``valid`` is the score test,
    made on the classification score alone before that factor (MMDetection's order). The
    size test (``min_bbox_size``) is left to the caller, since it applies in whatever pixels
    the caller's boxes end up in (original image for predict and TTA, input for export).
    """

    boxes: Tensor  # (N, P, 4) x1, y1, x2, y2 in network-input pixels
    scores: Tensor  # (N, P) float32, in [0, 1]
    labels: Tensor  # (N, P) int64 in [0, K) (the RPN: the candidate's level)
    valid: Tensor  # (N, P) bool: above the head's score threshold


def detections_as_candidates(batch: DetectionBatch) -> Candidates:
    """Detections padded to (N, M) as candidates: a real detection slot is valid, padding is
    not. For a detector whose final NMS is not a dense head's (a two-stage one): test-time
    augmentation merges its post-NMS detections per view."""
    slots = torch.arange(batch.scores.shape[1], device=batch.scores.device)  # (M,)
    return Candidates(batch.boxes, batch.scores, batch.labels,
                      slots[None, :] < batch.num_dets[:, None])  # (N, M)
