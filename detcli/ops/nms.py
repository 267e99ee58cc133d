"""Non-maximum suppression: hard NMS (torchvision) and soft-NMS, both per cluster of boxes.

B boxes in all; ``idxs`` (B,) int64 names each box's cluster (a class, or image * K + class).
Boxes of different clusters never suppress each other. Boxes are (x1, y1, x2, y2) in pixels.
Both functions return ``keep`` (D,) int64 indices into the B boxes, sorted by (final) score,
highest first.
"""

from __future__ import annotations

from typing import Literal

import torch
import torchvision
from torch import Tensor

from detcli.errors import ConfigError
from detcli.ops.boxes import aligned_box_iou

SoftNMSMethod = Literal["linear", "gaussian"]


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """Hard NMS within each cluster: ``Tensor[B,4], Tensor[B], Tensor[B] -> Tensor[D]``.

    A box is dropped when its IoU with a higher-scoring kept box of the same cluster is above
    ``iou_threshold``. Runs :func:`torchvision.ops.batched_nms` in float64: torchvision shifts
    every cluster by ``idx * (max coordinate + 1)``, and with thousands of clusters (images x
    classes) those offsets would cost float32 boxes their sub-pixel precision.
    """
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    return torchvision.ops.batched_nms(boxes.double(), scores.double(), idxs, float(iou_threshold))


def batched_soft_nms(
    boxes: Tensor,
    scores: Tensor,
    idxs: Tensor,
    iou_threshold: float = 0.3,
    sigma: float = 0.5,
    method: SoftNMSMethod = "linear",
    min_score: float = 1e-3,
) -> tuple[Tensor, Tensor]:
    """Soft-NMS within each cluster -> (keep (D,) int64, new_scores (D,) float32).

    MMCV's ``soft_nms`` semantics, run for all clusters at once: repeatedly take the
    highest-scoring remaining box of each cluster (kept with its current score), then decay
    the score of every other remaining box of that cluster by its IoU ``o`` with it:

    - ``linear``: ``score *= 1 - o`` when ``o >= iou_threshold``, unchanged otherwise;
    - ``gaussian``: ``score *= exp(-o**2 / sigma)`` (``iou_threshold`` is not used).

    A box whose score falls below ``min_score`` is discarded. One difference from MMCV: a box
    that starts below ``min_score`` is discarded too, where MMCV keeps the very first box it
    picks without checking it. Ties go to the lower index. Test-time code: it loops (with host
    syncs) once per box of the largest cluster.
    """
    if method not in ("linear", "gaussian"):
        raise ConfigError(f"soft-NMS method must be 'linear' or 'gaussian', got {method!r}")
    if sigma <= 0:
        raise ConfigError(f"soft-NMS sigma must be > 0, got {sigma}")
    device = boxes.device
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=device), torch.empty(0, device=device)
    _, cluster = torch.unique(idxs, return_inverse=True)  # (B,) compact cluster ids in [0, U)
    num_clusters = int(cluster.max()) + 1

    # Working set: the boxes still alive, shrunk every round.
    live = torch.nonzero(scores.float() >= min_score).squeeze(1)  # (W,) indices into B
    live_scores = scores.float()[live]  # (W,)
    kept_idx: list[Tensor] = []
    kept_scores: list[Tensor] = []
    while live.numel() > 0:
        picked, partner = _pick_per_cluster(live_scores, cluster[live], num_clusters)
        kept_idx.append(live[picked])
        kept_scores.append(live_scores[picked])
        iou = aligned_box_iou(boxes[live], boxes[live[partner]])  # (W,)
        live_scores = live_scores * _decay(iou, method, iou_threshold, sigma)
        rest = live_scores >= min_score  # (W,)
        rest[picked] = False
        live, live_scores = live[rest], live_scores[rest]

    keep = torch.cat(kept_idx)  # (D,)
    new_scores = torch.cat(kept_scores)  # (D,)
    order = torch.sort(new_scores, descending=True, stable=True).indices  # (D,)
    return keep[order], new_scores[order]


def _decay(iou: Tensor, method: SoftNMSMethod, iou_threshold: float, sigma: float) -> Tensor:
    """Soft-NMS's score multiplier for boxes at IoU ``iou`` with the picked box."""
    if method == "linear":
        return torch.where(iou >= iou_threshold, 1.0 - iou, torch.ones_like(iou))
    return torch.exp(-(iou * iou) / sigma)


def _pick_per_cluster(scores: Tensor, cluster: Tensor, num_clusters: int) -> tuple[Tensor, Tensor]:
    """The top-scoring box of each cluster (ties: lowest position).

    scores (W,), cluster (W,) in [0, U) -> (picked (P,) positions, one per non-empty cluster;
    partner (W,) the position of each box's cluster pick).
    """
    width = scores.shape[0]
    best = torch.full((num_clusters,), float("-inf"), device=scores.device).scatter_reduce(
        0, cluster, scores, reduce="amax")  # (U,)
    position = torch.arange(width, device=scores.device)  # (W,)
    candidates = torch.where(scores == best[cluster], position, width)  # (W,)
    pick = torch.full((num_clusters,), width, device=scores.device).scatter_reduce(
        0, cluster, candidates, reduce="amin")  # (U,), width where the cluster is empty
    return pick[pick < width], pick[cluster]
