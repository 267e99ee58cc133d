"""Proposals for the RoI sampling view of ``det viz assign``: jittered GT boxes, or a
checkpoint's own RPN proposals.

G GT boxes, J jittered boxes per GT, B background boxes, P proposals. Boxes are
(x1, y1, x2, y2) in network-input pixels; (h, w) is the image before padding.

- **jitter** (no checkpoint, no network): per GT, J boxes whose IoU with it spreads evenly over
  ``IOU_RANGE`` (:func:`jitter_boxes`: one target IoU drawn in each of J equal strata, the box
  found on a random path of shift and scale away from the GT), and B random background boxes
  (:func:`background_boxes`); all inside the image, deterministic for a seed;
- **a checkpoint**: the model's own RPN on the network input, with the proposal settings
  training uses (``model.train_cfg.rpn_proposal``), the model in eval mode
  (:func:`run_checkpoint`, which keeps the model and its features for a cascade's stages).
  The input is the picture's image normalised again by the pipeline's ``Normalize``, so the
  proposals sit exactly on what is drawn (the picture's 8-bit pixels round the input by at
  most half a grey level).

:mod:`detcli.analysis.roi_sampling` replays the RoI head's sampling on them.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from detcli.analysis import capabilities as can
from detcli.analysis.assign_view import AssignmentView
from detcli.analysis.checkpoint_model import checkpoint_model
from detcli.analysis.pipeline_view import channel_order
from detcli.engine.device import resolve_device
from detcli.errors import DetError
from detcli.models.protocols import Detector
from detcli.ops.boxes import box_iou
from detcli.structures.batch import ImageBatch


log = logging.getLogger(__name__)

IOU_RANGE = (0.1, 0.95)  # the jittered boxes' IoU with their GT spreads over this
JITTER_PER_GT = 16  # J by default
BACKGROUND = 64  # B by default
MAX_SHIFT = 1.5  # the path's end: the box moved by 1.5 of the GT's side along one axis...
MAX_LOG_SCALE = math.log(2.0)  # ... and each side scaled by up to 2 or 1/2: IoU 0 there
BISECT_STEPS = 30  # the path position is found within 2**-30


def _clip(boxes: Tensor, img_shape: tuple[int, int]) -> Tensor:
    """(..., 4) boxes clipped to the (h, w) image."""
    h, w = img_shape
    limits = boxes.new_tensor([w, h, w, h])  # (4,)
    return torch.minimum(boxes.clamp(min=0), limits)


def jitter_boxes(gt_boxes: Tensor, img_shape: tuple[int, int], per_gt: int,
                 generator: Optional[torch.Generator] = None,
                 iou_range: tuple[float, float] = IOU_RANGE) -> tuple[Tensor, Tensor]:
    """J = ``per_gt`` boxes around each GT (G, 4) -> (boxes (G, J, 4), target IoUs (G, J)).

    Box j of a GT aims at an IoU drawn uniformly in the j-th of J equal strata of
    ``iou_range``. It lies on a path that starts at the GT and ends, at position 1, moved by
    ``MAX_SHIFT`` times the GT's side along a random direction (one coordinate of it +-1) with
    its sides scaled by random factors in [1/2, 2]: there it no longer overlaps the GT. Every
    point of the path is clipped to the image, so the IoU goes from 1 to 0 continuously, and a
    bisection finds a position whose IoU is the target (at least it, within 2**-30 of the path).
    """
    gt = gt_boxes.float().reshape(-1, 4)  # (G, 4)
    num_gt, lo, hi = gt.shape[0], float(iou_range[0]), float(iou_range[1])
    if per_gt <= 0 or num_gt == 0:
        return gt.new_zeros(num_gt, max(per_gt, 0), 4), gt.new_zeros(num_gt, max(per_gt, 0))
    if not 0 < lo <= hi < 1:
        raise DetError(f"jitter IoU range {iou_range} must satisfy 0 < low <= high < 1")
    strata = torch.arange(per_gt, dtype=torch.float32)  # (J,)
    u = torch.rand(num_gt, per_gt, generator=generator)  # (G, J)
    target = lo + (hi - lo) * (strata + u) / per_gt  # (G, J): one per stratum
    angle = torch.rand(num_gt, per_gt, generator=generator) * (2 * math.pi)  # (G, J)
    direction = torch.stack([angle.cos(), angle.sin()], dim=-1)  # (G, J, 2)
    direction = direction / direction.abs().amax(dim=-1, keepdim=True)  # (G, J, 2) a side is +-1
    log_scale = (torch.rand(num_gt, per_gt, 2, generator=generator) * 2 - 1) * MAX_LOG_SCALE
    centre = ((gt[:, :2] + gt[:, 2:]) / 2)[:, None, :]  # (G, 1, 2)
    size = (gt[:, 2:] - gt[:, :2])[:, None, :]  # (G, 1, 2) w, h

    def box_at(position: Tensor) -> Tensor:  # (G, J) in [0, 1] -> (G, J, 4)
        t = position[..., None]  # (G, J, 1)
        middle = centre + t * MAX_SHIFT * direction * size  # (G, J, 2)
        half = size * torch.exp(t * log_scale) / 2  # (G, J, 2)
        return _clip(torch.cat([middle - half, middle + half], dim=-1), img_shape)

    def iou_at(position: Tensor) -> Tensor:  # (G, J) -> (G, J): each box with its own GT
        return box_iou(box_at(position), gt[:, None, :])[..., 0]

    low = torch.zeros(num_gt, per_gt)  # IoU >= target here (the GT itself) ...
    high = torch.ones(num_gt, per_gt)  # ... and < target here (no overlap)
    for _ in range(BISECT_STEPS):
        mid = (low + high) / 2  # (G, J)
        above = iou_at(mid) >= target  # (G, J)
        low = torch.where(above, mid, low)
        high = torch.where(above, high, mid)
    return box_at(low), target


def background_boxes(img_shape: tuple[int, int], count: int,
                     generator: Optional[torch.Generator] = None) -> Tensor:
    """``count`` random boxes (B, 4) over the (h, w) image: centres uniform in it, each side
    log-uniform between 1/16 (4 pixels at least) and 1/2 of the shorter image side, clipped."""
    h, w = img_shape
    shorter = float(min(h, w))
    small, large = math.log(max(shorter / 16, 4.0)), math.log(max(shorter / 2, 4.0))
    centre = torch.rand(count, 2, generator=generator) * torch.tensor([w, h], dtype=torch.float32)
    sides = torch.exp(small + (large - small) * torch.rand(count, 2, generator=generator))  # (B, 2)
    return _clip(torch.cat([centre - sides / 2, centre + sides / 2], dim=-1), img_shape)


def jitter_proposals(gt_boxes: Tensor, img_shape: tuple[int, int], per_gt: int = JITTER_PER_GT,
                     background: int = BACKGROUND,
                     generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
    """The jittered boxes of every GT, then the background ones -> (proposals (P, 4), source
    (P,) int64: the GT a box was jittered from, -1 for background), P = G * J + B."""
    jittered, _ = jitter_boxes(gt_boxes, img_shape, per_gt, generator)  # (G, J, 4)
    num_gt = jittered.shape[0]
    source = torch.arange(num_gt)[:, None].expand(-1, jittered.shape[1]).reshape(-1)  # (G*J,)
    boxes = torch.cat([jittered.reshape(-1, 4), background_boxes(img_shape, background, generator)])
    return boxes, torch.cat([source, torch.full((background,), -1, dtype=torch.long)])


def _normalize_step(pipeline: Sequence[Any]) -> Optional[dict[str, Any]]:
    """The pipeline's ``Normalize`` settings (inside ``MultiScaleFlipAug`` too), or None."""
    for step in pipeline:
        spec = step.model_dump() if hasattr(step, "model_dump") else dict(step)
        if spec.get("type") == "Normalize":
            return spec
        if spec.get("type") == "MultiScaleFlipAug":
            found = _normalize_step(spec.get("transforms", []))
            if found is not None:
                return found
    return None


def network_input(view: AssignmentView, pipeline: Sequence[Any]) -> ImageBatch:
    """The picture's image (H, W, 3) uint8 BGR as the network input of one image: the channel
    order ``LoadImageFromFile`` reads, then the pipeline's ``Normalize`` (module docstring)."""
    img = view.image.astype(np.float32)  # (H, W, 3) BGR
    if channel_order(pipeline) == "rgb":
        img = img[..., ::-1]
    norm = _normalize_step(pipeline)
    if norm is not None:
        if norm.get("to_rgb", True):
            img = img[..., ::-1]
        img = (img - np.asarray(norm["mean"], np.float32)) / np.asarray(norm["std"], np.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]  # (1, 3, H, W)
    return ImageBatch(tensor=tensor, img_shapes=[tuple(view.img_shape)],
                      ori_shapes=[tuple(view.ori_shape)],
                      scale_factors=torch.tensor([view.scale_factor], dtype=torch.float32),
                      metas=[{"filename": view.filename, "flip": view.flip}])


@dataclass
class CheckpointRun:
    """A checkpoint's model, in eval mode on its device, run once on the view's image: the
    network input, the neck's features (what the RoI stages pool) and the RPN proposals."""

    model: Detector
    images: ImageBatch  # one image, on the model's device
    feats: list[Tensor]  # L x (1, C, H_l, W_l)
    proposals: Tensor  # (P, 4) on the CPU


def _proposing_detector(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` if it makes proposals, else DetError naming the detectors it is for."""
    if not can.makes_proposals(model):
        raise DetError(f"{type(model).__name__} makes no proposals: --checkpoint applies to "
                       "two-stage detectors (an rpn_head and a roi_head)")
    return model


@torch.no_grad()
def run_checkpoint(cfg: Any, checkpoint: str | Path, view: AssignmentView,
                   pipeline: Sequence[Any], device: Optional[str] = "cpu") -> CheckpointRun:
    """``checkpoint``'s model on the view's image, its RPN proposals made with
    ``model.train_cfg.rpn_proposal``; CheckpointError when it does not fit the config."""
    model = checkpoint_model(cfg, checkpoint, _proposing_detector, view.class_names, device)
    images = network_input(view, pipeline).to(resolve_device(device))
    feats, rpn_outputs = model(images.tensor)
    proposals = model.rpn_head.predict_proposals(rpn_outputs, images, cfg.model.train_cfg.rpn_proposal)
    boxes = proposals.boxes[0][proposals.valid[0]].float().cpu()  # (P, 4)
    log.info("%s: %d RPN proposals (train_cfg.rpn_proposal)", checkpoint, len(boxes))
    return CheckpointRun(model, images, list(feats), boxes)
