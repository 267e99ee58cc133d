"""What can be wrong with a dataset's segmentations: the mask half of ``det data check``.

P points of one polygon part. Every annotation the dataset keeps that has a ``segmentation``
(crowd regions included) is checked; a format without masks (VOC) and annotations without a
``segmentation`` in a file that has none at all (a box-only COCO file) give no problem. Kinds:

- ``bad_segmentation`` (error): not a list of polygons nor an RLE dict with ``size`` and
  ``counts`` (``LoadAnnotations(with_mask=True)`` stops on it), a polygon part with an odd
  number of coordinates, or, in a file where other annotations have one, no ``segmentation``.
- ``rle_size_mismatch`` (error): an RLE whose ``size`` is not its image's [height, width].
- ``degenerate_polygon`` (warning): a part with fewer than 3 points (MMDetection drops such
  parts; an instance left with none is ignored in training) or, not crossing itself, of zero
  area (it covers no pixel).
- ``self_intersecting_polygon`` (warning): two edges of a part that are not neighbours cross
  (pycocotools rasterises such a ring by the even-odd rule, so a figure-eight loses its
  overlap; an annotation tool's slip, usually).
- ``mask_box_mismatch`` (warning): the mask's own bounding box and the annotation's box have
  an IoU under :data:`MASK_BOX_MIN_IOU` (the polygon's vertex extent; pycocotools ``toBbox``
  for an RLE).

Each is a :class:`~detcli.data.problems.DataProblem` naming the annotation file, the
annotation and the image.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import pycocotools.mask as mask_utils

from detcli.data.datasets.base import DetDataset, MaskRecord
from detcli.data.masks_io import NoMasks, is_rle
from detcli.data.problems import DataProblem, Severity
from detcli.structures.masks import polygon_area

BAD_SEGMENTATION = "bad_segmentation"
RLE_SIZE_MISMATCH = "rle_size_mismatch"
DEGENERATE_POLYGON = "degenerate_polygon"
SELF_INTERSECTING_POLYGON = "self_intersecting_polygon"
MASK_BOX_MISMATCH = "mask_box_mismatch"
SEGMENTATION_KINDS = (BAD_SEGMENTATION, RLE_SIZE_MISMATCH, DEGENERATE_POLYGON,
                      SELF_INTERSECTING_POLYGON, MASK_BOX_MISMATCH)
# The mask's bounding box and the annotation's box must overlap at least this much (IoU).
MASK_BOX_MIN_IOU = 0.5


def crossing_edges(ring: np.ndarray) -> tuple[int, int] | None:
    """The first pair (i, j) of non-adjacent edges of the closed (P, 2) ``ring`` that cross
    (a proper crossing: each edge's ends strictly on both sides of the other), else None.
    Edge i runs from point i to point i + 1 (mod P)."""
    p = len(ring)
    if p < 4:
        return None
    a, b = ring, np.roll(ring, -1, axis=0)  # (P, 2) edge starts and ends

    def orient(o: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """(P, P) sign of the turn o -> u -> v, o/u per row edge, v per column point."""
        d = u - o  # (P, 2)
        return np.sign(d[:, None, 0] * (v[None, :, 1] - o[:, None, 1])
                       - d[:, None, 1] * (v[None, :, 0] - o[:, None, 0]))

    # edge i against edge j: c, d = a[j], b[j]
    side_c, side_d = orient(a, b, a), orient(a, b, b)  # (P, P): where edge j's ends lie
    # edge j straddles edge i's line, and edge i straddles edge j's (the transpose)
    crosses = (side_c * side_d < 0) & ((side_c * side_d).T < 0)
    i, j = np.triu_indices(p, k=2)  # pairs i < j - 1
    keep = ~((i == 0) & (j == p - 1))  # the first and last edges share point 0
    hit = np.flatnonzero(crosses[i[keep], j[keep]])
    return (int(i[keep][hit[0]]), int(j[keep][hit[0]])) if hit.size else None


def _box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two (4,) x1 y1 x2 y2 boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _polygon_findings(parts: list[Any]) -> Iterator[tuple[str, Severity, str]]:
    """(kind, severity, message) for each faulty part of a polygon segmentation."""
    for k, part in enumerate(parts):
        values = np.asarray(part, dtype=np.float64).reshape(-1) if isinstance(part, list) else None
        if values is None or not np.isfinite(values).all():
            yield BAD_SEGMENTATION, "error", f"polygon part {k} is not a list of numbers"
            continue
        if values.size % 2:
            yield BAD_SEGMENTATION, "error", (f"polygon part {k} has {values.size} coordinates, "
                                              "an odd number (x, y pairs expected)")
            continue
        ring = values.reshape(-1, 2)
        if len(ring) < 3:
            yield DEGENERATE_POLYGON, "warning", (f"polygon part {k} has {len(ring)} points; "
                                                  "it is dropped")
            continue
        crossing = crossing_edges(ring)  # first: a figure-eight's signed lobes cancel to 0
        if crossing is not None:
            i, j = crossing
            yield SELF_INTERSECTING_POLYGON, "warning", (
                f"polygon part {k} intersects itself (edges {i} and {j} cross)")
        elif polygon_area(ring) == 0:
            yield DEGENERATE_POLYGON, "warning", (f"polygon part {k} has zero area; it covers "
                                                  "no pixel")


def _extent(segm: Any) -> np.ndarray | None:
    """(4,) x1 y1 x2 y2 of a segmentation's pixels or vertices; None if it has none."""
    if isinstance(segm, dict):
        h, w = (int(v) for v in segm["size"])
        counts = segm["counts"]
        rle = (mask_utils.frPyObjects(segm, h, w) if isinstance(counts, list)
               else {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str)
                     else counts})
        x, y, bw, bh = mask_utils.toBbox(rle)
        return np.array([x, y, x + bw, y + bh]) if bw > 0 and bh > 0 else None
    rings = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in segm
             if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0]
    if not rings:
        return None
    points = np.concatenate(rings)  # (sum P, 2)
    return np.concatenate([points.min(axis=0), points.max(axis=0)])


def _record_findings(record: MaskRecord, height: int, width: int
                     ) -> Iterator[tuple[str, Severity, str]]:
    segm = record.segmentation
    if isinstance(segm, NoMasks):  # a YOLO box line: no mask, nothing to check
        return
    if isinstance(segm, dict):
        if not is_rle(segm):
            yield BAD_SEGMENTATION, "error", ("`segmentation` is a dict without `size` and "
                                              "`counts` (a list or a string): not an RLE")
            return
        size = [int(v) for v in segm["size"]]
        if size != [height, width]:
            yield RLE_SIZE_MISMATCH, "error", (f"RLE of size {size} (h, w) on an image of "
                                               f"{height}x{width} (h x w)")
            return
    elif isinstance(segm, list):
        found = list(_polygon_findings(segm))
        yield from found
        if any(kind == BAD_SEGMENTATION for kind, _, _ in found):
            return
    else:
        yield BAD_SEGMENTATION, "error", (f"`segmentation` is a {type(segm).__name__}; expected "
                                          "a list of polygons or an RLE dict")
        return
    extent = _extent(segm)
    if extent is None:
        return
    iou = _box_iou(extent, record.box.astype(np.float64))
    if iou < MASK_BOX_MIN_IOU:
        shown = ", ".join(f"{v:g}" for v in extent)
        box = ", ".join(f"{v:g}" for v in record.box)
        yield MASK_BOX_MISMATCH, "warning", (
            f"the mask's extent [{shown}] and the box [{box}] overlap with IoU {iou:.2f} "
            f"(under {MASK_BOX_MIN_IOU}): the mask and the box disagree")


def segmentation_problems(dataset: DetDataset) -> list[DataProblem]:
    """Every segmentation problem of ``dataset`` (module docstring)."""
    if not dataset.has_masks:
        return []
    per_image = [dataset.mask_records(k) for k in range(len(dataset))]
    any_segmentation = any(r.segmentation is not None for records in per_image for r in records)
    problems = []
    for k, records in enumerate(per_image):
        info = dataset.img_infos[k]
        source = dataset.ann_source(k)
        for record in records:
            if record.segmentation is None:
                if any_segmentation and not record.ignore:
                    problems.append(DataProblem(
                        BAD_SEGMENTATION, source, "has no `segmentation` while other "
                        "annotations of the file have one", record.name, info["file_name"]))
                continue
            for kind, severity, message in _record_findings(record, int(info["height"]),
                                                            int(info["width"])):
                problems.append(DataProblem(kind, source, message, record.name,
                                            info["file_name"], severity))
    return problems
