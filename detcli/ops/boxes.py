"""Box geometry as pure tensor functions: areas, overlaps, format conversions, clipping, scaling.

Shapes: ``...`` any leading (batch) dims, broadcast between the two arguments; N boxes in the
first set, M in the second. Boxes are (x1, y1, x2, y2) in absolute pixels; ``cxcywh`` names the
(centre x, centre y, width, height) form. Nothing here has a config or an nn.Module.

Overlaps follow MMDetection's ``bbox_overlaps``: widths are ``x2 - x1`` (no +1), the
denominator is clamped to ``eps`` so empty boxes give 0 instead of NaN, and they are computed
in float32 whatever the input dtype, so AMP (float16/bfloat16 boxes) cannot lose precision.
"""

from __future__ import annotations

from typing import Literal, Sequence, Union

import torch
from torch import Tensor

OverlapMode = Literal["iou", "iof"]
ShapeLike = Union[Sequence[int], Tensor]  # (h, w), or a Tensor (..., 2) of (h, w) per image
ScaleLike = Union[float, Sequence[float], Tensor]

EPS = 1e-6


def box_area(boxes: Tensor) -> Tensor:
    """Area of (..., 4) boxes -> (...). Degenerate boxes (x2 < x1) give a negative area."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes1: Tensor, boxes2: Tensor, mode: OverlapMode = "iou", eps: float = EPS) -> Tensor:
    """Pairwise overlaps: ``Tensor[..., N, 4], Tensor[..., M, 4] -> Tensor[..., N, M]`` (float32).

    ``mode="iou"``: intersection / union. ``mode="iof"``: intersection / area of ``boxes1``
    (MMDetection's "intersection over foreground"). Leading dims broadcast, so
    ``box_iou(gt (B, G, 4), priors (R, 4))`` gives (B, G, R).
    """
    if mode not in ("iou", "iof"):
        raise ValueError(f"box_iou mode must be 'iou' or 'iof', got {mode!r}")
    x1a, y1a, x2a, y2a = (c[..., :, None] for c in boxes1.float().unbind(-1))  # (..., N, 1) each
    x1b, y1b, x2b, y2b = (c[..., None, :] for c in boxes2.float().unbind(-1))  # (..., 1, M) each
    # one (..., N, M) tensor per axis, rather than (..., N, M, 2) corners: less memory
    inter_w = (torch.minimum(x2a, x2b) - torch.maximum(x1a, x1b)).clamp_(min=0)  # (..., N, M)
    inter_h = (torch.minimum(y2a, y2b) - torch.maximum(y1a, y1b)).clamp_(min=0)  # (..., N, M)
    inter = inter_w.mul_(inter_h)  # (..., N, M)
    area1 = (x2a - x1a) * (y2a - y1a)  # (..., N, 1)
    if mode == "iou":
        denom = (area1 + (x2b - x1b) * (y2b - y1b)) - inter  # (..., N, M)
    else:
        denom = area1
    return inter / denom.clamp(min=eps)


def _aligned_parts(boxes1: Tensor, boxes2: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """(iou, union) of elementwise pairs, float32, both (...)."""
    boxes1, boxes2 = boxes1.float(), boxes2.float()
    lt = torch.maximum(boxes1[..., :2], boxes2[..., :2])  # (..., 2)
    rb = torch.minimum(boxes1[..., 2:], boxes2[..., 2:])  # (..., 2)
    wh = (rb - lt).clamp(min=0)  # (..., 2)
    inter = wh[..., 0] * wh[..., 1]  # (...)
    union = (box_area(boxes1) + box_area(boxes2) - inter).clamp(min=eps)  # (...)
    return inter / union, union


def aligned_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = EPS) -> Tensor:
    """IoU of elementwise pairs: ``Tensor[..., 4], Tensor[..., 4] -> Tensor[...]`` (float32)."""
    iou, _ = _aligned_parts(boxes1, boxes2, eps)
    return iou


def aligned_giou(boxes1: Tensor, boxes2: Tensor, eps: float = EPS) -> Tensor:
    """Generalised IoU of elementwise pairs: ``Tensor[..., 4], Tensor[..., 4] -> Tensor[...]``.

    ``giou = iou - (enclosing area - union) / enclosing area``, in [-1, 1] (float32).
    """
    iou, union = _aligned_parts(boxes1, boxes2, eps)
    b1, b2 = boxes1.float(), boxes2.float()
    enc_lt = torch.minimum(b1[..., :2], b2[..., :2])  # (..., 2)
    enc_rb = torch.maximum(b1[..., 2:], b2[..., 2:])  # (..., 2)
    enc_wh = (enc_rb - enc_lt).clamp(min=0)  # (..., 2)
    enclosing = (enc_wh[..., 0] * enc_wh[..., 1]).clamp(min=eps)  # (...)
    return iou - (enclosing - union) / enclosing


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """(x1, y1, x2, y2) -> (cx, cy, w, h), (..., 4) -> (..., 4). Inverse of cxcywh_to_xyxy."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([(x1 + x2) * 0.5, (y1 + y2) * 0.5, x2 - x1, y2 - y1], dim=-1)


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """(cx, cy, w, h) -> (x1, y1, x2, y2), (..., 4) -> (..., 4). Inverse of xyxy_to_cxcywh."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def _max_xyxy(shape: ShapeLike, like: Tensor) -> Tensor:
    """(w, h, w, h) upper bounds from an (h, w) shape, broadcastable to ``like`` (..., R, 4)."""
    if isinstance(shape, Tensor):
        hw = shape[..., :2].to(like)  # (..., 2) as (h, w)
        wh = hw.flip(-1)  # (..., 2) as (w, h)
        bounds = torch.cat([wh, wh], dim=-1)  # (..., 4)
        return bounds.unsqueeze(-2) if bounds.dim() > 1 else bounds  # (..., 1, 4): one per image
    h, w = shape[0], shape[1]
    return like.new_tensor([w, h, w, h])  # (4,)


def clip_boxes(boxes: Tensor, shape: ShapeLike) -> Tensor:
    """Clamp x to [0, w] and y to [0, h].

    ``shape`` is one (h, w) for all boxes (a tuple, extra entries such as channels ignored), or a
    Tensor (N, 2) of (h, w) per image for boxes (N, R, 4). Keeps the dtype of ``boxes``.
    """
    upper = _max_xyxy(shape, boxes)  # (4,) or (N, 1, 4)
    return torch.minimum(boxes.clamp(min=0), upper)


def scale_boxes(boxes: Tensor, factors: ScaleLike) -> Tensor:
    """Multiply x by sx and y by sy.

    ``factors``: a float (both axes), an (sx, sy) pair, or a Tensor (..., 4) of
    (sx, sy, sx, sy) broadcastable to ``boxes`` (per image: pass ``scale_factors[:, None, :]``
    for boxes (N, R, 4)). To map network-input boxes back to the original image, pass
    ``1 / ImageBatch.scale_factors``.
    """
    if isinstance(factors, Tensor):
        return boxes * factors.to(boxes)
    if isinstance(factors, (int, float)):
        return boxes * float(factors)
    sx, sy = factors
    return boxes * boxes.new_tensor([sx, sy, sx, sy])
