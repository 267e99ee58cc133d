"""Non-maximum suppression: hard NMS (torchvision) and soft-NMS, both per cluster of boxes.

B boxes in all; ``idxs`` (B,) int64 names each box's cluster (a class, or image * K + class),
C = ``idxs.max() + 1``. Boxes of different clusters never suppress each other. Boxes are
(x1, y1, x2, y2) in pixels. Both functions return ``keep`` (D,) int64 indices into the B boxes,
sorted by (final) score, highest first; equal scores keep the lower index first.

Hard NMS is one :func:`torchvision.ops.nms` call for the whole batch, whatever its size
(torchvision's ``batched_nms`` falls into a Python loop with a ``nonzero`` per cluster above
100k boxes on CUDA). Clusters are moved apart: cluster ``c`` sits at tile (c % T, c // T) of a
T x T grid, T = ceil(sqrt(C)), shifted by the tile times the boxes' span (max - min + 1) on
each axis, so boxes of different tiles cannot overlap; T grows as sqrt(C), not as C. The
shift is computed on the device (no host read) in float64, where adding it is exact for
every coordinate of magnitude above ~1e-4 px (a float32 box has 24 significant bits, the
shifted value 53): the IoUs, hence the kept boxes, are those of NMS run on each cluster alone.
No float32 shift is exact for every float32 coordinate (the low bits of a small coordinate
fall below the shifted value's ulp), so the float64 upcast stays; docs/performance.md gives
the measured float32 differences.

On the CPU, above ``CPU_SINGLE_CALL_MAX_BOXES`` boxes NMS runs once per cluster instead: the
CPU kernel compares every kept box with every later box of every cluster, so one call costs
about kept x B (measured 0.92 s against 0.044 s per cluster for 32k boxes in 40 clusters),
and on the CPU there is no device to wait for. Both ways keep the same boxes in the same order.
"""

from __future__ import annotations

from typing import Literal

import torch
import torchvision
from torch import Tensor

from detcli.errors import ConfigError
from detcli.ops.boxes import aligned_box_iou

SoftNMSMethod = Literal["linear", "gaussian"]

CPU_SINGLE_CALL_MAX_BOXES = 1000  # torchvision's CPU threshold (4000 coordinates)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """Hard NMS within each cluster: ``Tensor[B,4], Tensor[B], Tensor[B] -> Tensor[D]``.

    A box is dropped when its IoU with a higher-scoring kept box of the same cluster is above
    ``iou_threshold``. One NMS call for every size on CUDA (module docstring).
    """
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    if boxes.device.type == "cpu" and boxes.shape[0] > CPU_SINGLE_CALL_MAX_BOXES:
        return per_cluster_nms(boxes, scores, idxs, iou_threshold)
    return tiled_nms(boxes, scores, idxs, iou_threshold)


def tiled_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """:func:`batched_nms` as one torchvision NMS call over clusters tiled apart, in float64.

    No host read: the span, the grid and the shifts are device tensors.
    """
    boxes64 = boxes.double()  # (B, 4)
    low = boxes64.amin(dim=0)  # (4,) x1, y1, x2, y2 minima
    high = boxes64.amax(dim=0)  # (4,)
    span_x = torch.maximum(high[0], high[2]) - torch.minimum(low[0], low[2]) + 1  # ()
    span_y = torch.maximum(high[1], high[3]) - torch.minimum(low[1], low[3]) + 1  # ()
    tiles = (idxs.max() + 1).double().sqrt().ceil().long()  # () T: the grid is T x T
    col, row = idxs % tiles, torch.div(idxs, tiles, rounding_mode="floor")  # (B,) each
    shift_x = col.double() * span_x  # (B,)
    shift_y = row.double() * span_y  # (B,)
    shift = torch.stack([shift_x, shift_y, shift_x, shift_y], dim=1)  # (B, 4)
    return torchvision.ops.nms(boxes64 + shift, scores.double(), float(iou_threshold))


def per_cluster_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """:func:`batched_nms` with one torchvision NMS call per cluster, in float64.

    The CPU's way for many boxes (module docstring); it reads the clusters on the host.
    """
    boxes64, scores64 = boxes.double(), scores.double()
    kept = torch.zeros_like(scores, dtype=torch.bool)  # (B,)
    for cluster in torch.unique(idxs).tolist():
        members = torch.nonzero(idxs == cluster).squeeze(1)  # (B_c,) ascending
        kept[members[torchvision.ops.nms(boxes64[members], scores64[members],
                                         float(iou_threshold))]] = True
    keep = torch.nonzero(kept).squeeze(1)  # (D,) ascending
    return keep[torch.sort(scores64[keep], descending=True, stable=True).indices]


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
