"""FCOS's target rule: which GT (if any) each point regresses, as MMDetection 2.x's
``FCOSHead._get_target_single``, batched over images. It sits with the assigners (FCOSHead
trains with it; the analysis tools use it through :class:`FCOSTargetAssigner`); it has no
registered config of its own: its settings are FCOSHead's.

N images, L levels, R points per image over all levels (R_l on level l, levels concatenated),
G GT slots per image (padding slots have label -1), K classes. Points are (x, y) in network-input
pixels; distances are (left, top, right, bottom) from a point to a box's sides, in pixels.

A point of level l is positive for a GT when

1. it lies inside the GT (every distance > 0) -- or, with ``center_sampling``, inside the GT's
   centre region: the square of half-side ``stride_l * center_sample_radius`` around the GT's
   centre, clipped to the GT;
2. its largest distance to the GT's sides lies in level l's regress range ``[lo, hi]``
   (``regress_ranges``; MMDetection writes the last level's upper bound as INF = 1e8, and so do
   the presets, as TOML has no infinity that survives a JSON round trip);
3. among the GTs passing 1 and 2, the GT has the smallest area (ties: the lower slot).

Other points are background (label K). Ignore boxes play no part, as in MMDetection's FCOS.

Memory: the rule holds (N, R, G, 4) distances for the batch's largest GT count G. Rules 1-3
are per GT but for the minimum of rule 3, so :func:`fcos_targets` runs them on at most
``gt_chunk_size`` GT slots at a time and keeps a running (N, R) minimum: the peak holds
N x R x c x 4 instead of N x R x G x 4, and the result is bitwise the same (a tie still goes
to the lower slot). The number of passes depends on G, a shape, never on values: no host
synchronisation.

:class:`PointRegions` gives the same rule as geometry, per level and GT, for pictures; the
analysis tools reach the rule through :class:`FCOSTargetAssigner`, which returns an
:class:`~detcli.task.assigners.assign_result.AssignResult` over stride-sized cells centred on
the points (:class:`PointCells`), so IoU statistics and drawings work as for anchors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, Optional, Sequence

import torch
from pydantic import Field
from torch import Tensor

from detcli.config.schema import Schema
from detcli.errors import DetError
from detcli.ops.boxes import box_iou
from detcli.task.assigners.assign_result import NEGATIVE, AssignResult
from detcli.task.prior_generators.point_generator import MlvlPointGenerator

INF = 1e8
GT_CHUNK_SIZE = 32  # FCOSHeadConfig.gt_chunk_size's default
Range = tuple[float, float]
DEFAULT_RANGES: list[Range] = [(-1, 64), (64, 128), (128, 256), (256, 512), (512, INF)]


@dataclass
class PointTargets:
    """What every point of every image is trained towards."""

    labels: Tensor  # (N, R) int64: [0, K) positive, K background
    distances: Tensor  # (N, R, 4) float32: (l, t, r, b) to the matched GT, 0 off positives
    gt_index: Tensor  # (N, R) int64: matched GT slot, NEGATIVE off positives

    @property
    def positive(self) -> Tensor:
        return self.gt_index >= 0  # (N, R)


def per_point(values: Tensor, counts: Sequence[int]) -> Tensor:
    """Level values (L, D) -> point values (R, D), each level's row repeated R_l times (no copy
    from the host: ``values`` is already on the points' device)."""
    return torch.cat([values[level].expand(count, -1) for level, count in enumerate(counts)])


@torch.no_grad()
def fcos_targets(points: Tensor, point_strides: Tensor, regress_ranges: Tensor,
                 gt_boxes: Tensor, gt_labels: Tensor, num_classes: int,
                 center_sampling: bool = False, center_sample_radius: float = 1.5,
                 gt_chunk_size: int = GT_CHUNK_SIZE) -> PointTargets:
    """points (R, 2+), point_strides (R, 2) as (s_w, s_h), regress_ranges (R, 2) as (lo, hi),
    gt_boxes (N, G, 4), gt_labels (N, G) -> :class:`PointTargets` (module docstring);
    ``gt_chunk_size`` GT slots at a time (0: all at once)."""
    if gt_chunk_size < 0:
        raise DetError(f"gt_chunk_size must be >= 0 (0: all GT at once), got {gt_chunk_size}")
    num_images, num_slots = gt_labels.shape
    num_points = points.shape[0]
    device = points.device
    if num_slots == 0:
        return PointTargets(
            labels=torch.full((num_images, num_points), num_classes, dtype=torch.long,
                              device=device),
            distances=torch.zeros(num_images, num_points, 4, device=device),
            gt_index=torch.full((num_images, num_points), NEGATIVE, dtype=torch.long,
                                device=device))
    chunk = gt_chunk_size if gt_chunk_size > 0 else num_slots
    min_area = min_slot = matched = None
    for start in range(0, num_slots, chunk):  # G is a shape: the passes are static
        stop = min(start + chunk, num_slots)
        part_area, part_slot, part_matched = _smallest_usable_gt(
            points, point_strides, regress_ranges, gt_boxes[:, start:stop],
            gt_labels[:, start:stop], center_sampling, center_sample_radius)
        part_slot += start
        if min_area is None:
            min_area, min_slot, matched = part_area, part_slot, part_matched
            continue
        later = part_area < min_area  # strict: a tie keeps the lower slot, as one min does
        min_area = torch.where(later, part_area, min_area)
        min_slot = torch.where(later, part_slot, min_slot)
        matched = torch.where(later[..., None], part_matched, matched)
    positive = min_area < INF  # (N, R)
    labels = torch.gather(gt_labels, 1, min_slot)  # (N, R)
    labels = torch.where(positive, labels, num_classes)
    matched = torch.where(positive[..., None], matched, torch.zeros_like(matched))
    return PointTargets(labels, matched, torch.where(positive, min_slot, NEGATIVE))


def _smallest_usable_gt(points: Tensor, point_strides: Tensor, regress_ranges: Tensor,
                        gt_boxes: Tensor, gt_labels: Tensor, center_sampling: bool,
                        center_sample_radius: float) -> tuple[Tensor, Tensor, Tensor]:
    """Rules 1-3 over c GT slots (N, c, 4) -> (min_area (N, R), INF where no GT is usable;
    min_slot (N, R) in [0, c); distances (N, R, 4) to that GT)."""
    num_points = points.shape[0]
    x = points[:, 0].float()[None, :, None]  # (1, R, 1)
    y = points[:, 1].float()[None, :, None]  # (1, R, 1)
    box = gt_boxes.float()[:, None, :, :]  # (N, 1, c, 4)
    x1, y1, x2, y2 = box.unbind(-1)  # (N, 1, c) each
    distances = torch.stack([x - x1, y - y1, x2 - x, y2 - y], dim=-1)  # (N, R, c, 4)
    # 1. inside the GT, or inside its centre region
    if center_sampling:
        radius = point_strides.float()[None, :, None, :] * center_sample_radius  # (1, R, 1, 2)
        cx, cy = (x1 + x2) * 0.5, (y1 + y2) * 0.5  # (N, 1, c) each
        region = torch.stack([torch.maximum(cx - radius[..., 0], x1),
                              torch.maximum(cy - radius[..., 1], y1),
                              torch.minimum(cx + radius[..., 0], x2),
                              torch.minimum(cy + radius[..., 1], y2)], dim=-1)  # (N, R, c, 4)
        to_region = torch.stack([x - region[..., 0], y - region[..., 1],
                                 region[..., 2] - x, region[..., 3] - y], dim=-1)  # (N, R, c, 4)
        inside = to_region.amin(dim=-1) > 0  # (N, R, c)
    else:
        inside = distances.amin(dim=-1) > 0  # (N, R, c)
    # 2. the largest distance in the level's regress range
    farthest = distances.amax(dim=-1)  # (N, R, c)
    lo = regress_ranges.float()[None, :, 0:1]  # (1, R, 1)
    hi = regress_ranges.float()[None, :, 1:2]  # (1, R, 1)
    in_range = (farthest >= lo) & (farthest <= hi)  # (N, R, c)
    # 3. the smallest GT passing both
    usable = inside & in_range & (gt_labels >= 0)[:, None, :]  # (N, R, c)
    areas = ((x2 - x1) * (y2 - y1)).expand(-1, num_points, -1)  # (N, R, c)
    areas = torch.where(usable, areas, torch.full_like(areas, INF))
    min_area, min_slot = areas.min(dim=2)  # (N, R): the first minimum, i.e. the lowest slot
    index = min_slot[:, :, None, None].expand(-1, -1, 1, 4)  # (N, R, 1, 4)
    matched = distances.gather(2, index).squeeze(2)  # (N, R, 1, 4) -> (N, R, 4)
    return min_area, min_slot, matched


@dataclass
class PointRegions:
    """Where a point of each level may become positive for each GT, as boxes (for pictures).

    A point of level l can be positive for GT g (before the smallest-area tie-break) when it
    lies in ``eligible[l, g]`` but not in ``too_close[l, g]`` (there its largest distance is
    below the range's ``lo``). Empty regions have x2 <= x1 or y2 <= y1.
    """

    eligible: Tensor  # (L, G, 4): the GT (or centre region) within the range's ``hi``
    too_close: Tensor  # (L, G, 4): the part of it where the largest distance is < ``lo``
    center: Optional[Tensor]  # (L, G, 4) centre regions with ``center_sampling``, else None
    regress_ranges: list[Range]  # L


def _intersect(a: Tensor, b: Tensor) -> Tensor:
    """Boxes (..., 4) -> their intersections (..., 4), empty (x2 <= x1) where they miss."""
    return torch.cat([torch.maximum(a[..., :2], b[..., :2]),
                      torch.minimum(a[..., 2:], b[..., 2:])], dim=-1)


def fcos_regions(gt_boxes: Tensor, strides: Sequence[tuple[int, int]],
                 regress_ranges: Sequence[Range], center_sampling: bool = False,
                 center_sample_radius: float = 1.5) -> PointRegions:
    """The rule of :func:`fcos_targets` as regions: gt_boxes (G, 4) -> :class:`PointRegions`."""
    box = gt_boxes.float()[None]  # (1, G, 4)
    x1, y1, x2, y2 = box.unbind(-1)  # (1, G) each
    ranges = box.new_tensor([list(r) for r in regress_ranges])  # (L, 2)
    lo, hi = ranges[:, 0:1], ranges[:, 1:2]  # (L, 1) each
    region = box.expand(len(strides), -1, -1)  # (L, G, 4)
    center = None
    if center_sampling:
        radius = box.new_tensor([list(s) for s in strides])[:, None, :]  # (L, 1, 2)
        radius = radius * center_sample_radius
        cxy = (box[..., :2] + box[..., 2:]) * 0.5  # (1, G, 2)
        center = _intersect(torch.cat([cxy - radius, cxy + radius], dim=-1), region)  # (L, G, 4)
        region = center
    # max(l, t, r, b) <= hi  <=>  x2 - hi <= x <= x1 + hi  and  y2 - hi <= y <= y1 + hi
    within_hi = torch.stack([x2 - hi, y2 - hi, x1 + hi, y1 + hi], dim=-1)  # (L, G, 4)
    below_lo = torch.stack([x2 - lo, y2 - lo, x1 + lo, y1 + lo], dim=-1)  # (L, G, 4)
    eligible = _intersect(region, within_hi)  # (L, G, 4)
    return PointRegions(eligible, _intersect(eligible, below_lo), center,
                        [(float(a), float(b)) for a, b in regress_ranges])


class PointCells:
    """A point generator's points as stride-sized square cells centred on them: L x (R_l, 4).

    The analysis tools measure and draw priors as boxes; a cell is the area a point stands for.
    """

    def __init__(self, points: MlvlPointGenerator) -> None:
        self.points = points
        self.strides = points.strides

    @property
    def num_base_priors(self) -> list[int]:
        return self.points.num_base_priors

    @property
    def base_anchors(self) -> list[Tensor]:
        """L x (1, 4): each level's cell centred on the origin (its shape, for reports)."""
        return [torch.tensor([[-sw / 2, -sh / 2, sw / 2, sh / 2]]) for sw, sh in self.strides]

    def grid_priors(self, featmap_sizes: Sequence[tuple[int, int]],
                    device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32) -> list[Tensor]:
        per_level = self.points.grid_priors(featmap_sizes, device=device, dtype=dtype,
                                            with_stride=True)  # L x (R_l, 4): x, y, s_w, s_h
        return [torch.cat([p[:, :2] - p[:, 2:] / 2, p[:, :2] + p[:, 2:] / 2], dim=-1)
                for p in per_level]  # L x (R_l, 4)


class FCOSTargetsConfig(Schema):
    """The FCOS target rule's settings, as the analysis report shows them (not a registered
    assigner: FCOS has none)."""

    type: Literal["FCOSTargets"] = "FCOSTargets"
    regress_ranges: list[tuple[float, float]]
    center_sampling: bool = False
    center_sample_radius: float = Field(1.5, gt=0)


class FCOSTargetAssigner:
    """:func:`fcos_targets` behind the assigner interface, over :class:`PointCells` priors."""

    # declared capabilities (detcli.task.protocols.Assigner)
    needs_predictions: ClassVar[bool] = False
    needs_num_level_priors: ClassVar[bool] = True
    explains: ClassVar[frozenset[str]] = frozenset({"regions"})  # regions()
    pos_iou_thr: Optional[float] = None  # regions and ranges decide, not an IoU

    def __init__(self, *, strides: Sequence[tuple[int, int]], regress_ranges: Sequence[Range],
                 center_sampling: bool = False, center_sample_radius: float = 1.5,
                 gt_chunk_size: int = GT_CHUNK_SIZE) -> None:
        if len(regress_ranges) != len(strides):
            raise DetError(f"{len(regress_ranges)} regress ranges for {len(strides)} levels")
        self.strides = [tuple(s) for s in strides]
        self.regress_ranges = [tuple(r) for r in regress_ranges]
        self.center_sampling = center_sampling
        self.center_sample_radius = center_sample_radius
        self.gt_chunk_size = gt_chunk_size

    @torch.no_grad()
    def assign(self, priors: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
               ignore_boxes: Optional[Tensor] = None, ignore_valid: Optional[Tensor] = None,
               prior_valid: Optional[Tensor] = None,
               num_level_priors: Optional[Sequence[int]] = None) -> AssignResult:
        """priors (R, 4) cells, levels concatenated with ``num_level_priors``; the rest as
        :meth:`MaxIoUAssigner.assign` (ignore boxes and ``prior_valid`` play no part)."""
        if num_level_priors is None or sum(num_level_priors) != priors.shape[0]:
            raise DetError(f"FCOSTargetAssigner needs num_level_priors adding up to the "
                           f"{priors.shape[0]} priors, got {num_level_priors}")
        points = (priors[:, :2] + priors[:, 2:]) * 0.5  # (R, 2)
        strides = per_point(priors.new_tensor(self.strides), num_level_priors)  # (R, 2)
        ranges = per_point(priors.new_tensor(self.regress_ranges), num_level_priors)  # (R, 2)
        targets = fcos_targets(points, strides, ranges, gt_boxes, gt_labels, -1,  # background -1
                               self.center_sampling, self.center_sample_radius,
                               self.gt_chunk_size)
        gt_valid = gt_labels >= 0  # (N, G)
        if gt_labels.shape[1]:
            overlaps = box_iou(gt_boxes, priors)  # (N, G, R)
            overlaps = overlaps.masked_fill(~gt_valid[:, :, None], 0)
            max_iou = overlaps.amax(dim=1)  # (N, R)
        else:
            max_iou = priors.new_zeros(gt_labels.shape[0], priors.shape[0])
        return AssignResult(targets.gt_index, max_iou, targets.labels, gt_valid.sum(dim=1))

    def regions(self, gt_boxes: Tensor) -> PointRegions:
        """gt_boxes (G, 4) -> the regions of :func:`fcos_regions`."""
        return fcos_regions(gt_boxes, self.strides, self.regress_ranges, self.center_sampling,
                            self.center_sample_radius)

    def config(self) -> FCOSTargetsConfig:
        return FCOSTargetsConfig(regress_ranges=[tuple(r) for r in self.regress_ranges],
                                 center_sampling=self.center_sampling,
                                 center_sample_radius=self.center_sample_radius)
