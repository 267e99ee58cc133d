"""Instance masks: polygons kept as polygons until needed, bitmaps otherwise.

G instances of one image of height H and width W. Two structures share one interface
(:class:`InstanceMasks`), the one MMDetection 3.3's ``BitmapMasks`` / ``PolygonMasks`` have,
so a geometric transform moves the masks with the image without asking which kind it holds:

- :class:`BitmapMasks`: a (G, H, W) uint8 array in {0, 1}.
- :class:`PolygonMasks`: per instance a list of parts, each a float64 array (2P,) of
  ``x0, y0, x1, y1, ...`` in pixels of the image (pixel edges: the image spans [0, W] x [0, H],
  COCO's convention). Rasterised by :meth:`PolygonMasks.to_bitmap` with pycocotools
  (``frPyObjects`` + ``merge`` + ``decode``), the same call MMDetection's ``poly2mask`` makes:
  pixel (x, y) is in the mask when its centre (x + 0.5, y + 0.5) is inside, up to pycocotools'
  1/5-pixel rounding of the vertices.

Geometry (what each operation does to the two kinds; MMDetection's semantics):

- ``resize((h', w'))``: bitmaps by nearest-neighbour (cv2 ``INTER_NEAREST``, mmcv's
  ``imresize(..., interpolation="nearest")``); polygons scale x by w'/W and y by h'/H. The two
  agree up to one pixel along the boundary (nearest sampling is not area-exact).
- ``flip(direction)``: bitmaps mirror their columns / rows / both; polygons map x -> W - x
  and/or y -> H - y. Exact up to pycocotools' vertex rounding (a vertex on a 1/10-pixel tie).
- ``crop(box)``: ``box`` = (x1, y1, x2, y2) ints, clipped to the image; the result is
  max(x2 - x1, 1) wide and max(y2 - y1, 1) high. Bitmaps are sliced; polygons are clipped to
  the window (Sutherland-Hodgman against the window's four edges: the region shapely's
  intersection gives in MMDetection for a simple polygon; parts of a concave polygon the window
  separates stay one ring joined along the window's edge, which encloses no area) and shifted
  by (-x1, -y1). A part with nothing inside (or only a point or a line on the window's
edge) is dropped; an instance with no part left keeps
  MMDetection's placeholder ``[0, 0, 0, 0, 0, 0]`` (an empty mask), so masks stay aligned with
  their boxes until the caller drops the instance. Exact for a window of integer edges.
- ``pad((h', w'))``: bitmaps gain zero (``pad_val``) rows and columns at the bottom and right;
  polygons only change their canvas size.

:func:`crop_and_resize` is the batched, tensor form of MMDetection's
``BitmapMasks.crop_and_resize`` that mask targets are made with (RoIAlign on the GT masks,
``aligned=True``, then ``>= 0.5``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol, Sequence, Union

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import torch
from torch import Tensor
from torchvision.ops import roi_align

from detcli.errors import DataError

FlipDirection = Literal["horizontal", "vertical", "diagonal"]
Polygon = np.ndarray  # (2P,) float64: x0, y0, x1, y1, ... in image pixels
# A COCO ``segmentation``: polygons (a list of [x0, y0, ...] lists) or an RLE dict
# {"size": [h, w], "counts": list[int] (uncompressed) | str (compressed)}.
Segmentation = Union[list, dict]
EMPTY_POLYGON = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)  # MMDetection's placeholder for "no part left"
_CV2_CHANNELS = 128  # channels cv2.resize takes at once (OpenCV 5: 128; 4.x: 512)


class InstanceMasks(Protocol):
    """What a transform may do with ``results["gt_masks"]`` (module docstring)."""

    height: int
    width: int

    def __len__(self) -> int: ...

    def __getitem__(self, index: np.ndarray) -> InstanceMasks: ...

    def resize(self, out_shape: tuple[int, int]) -> InstanceMasks: ...

    def rescale(self, factor: float) -> InstanceMasks: ...

    def flip(self, direction: FlipDirection = "horizontal") -> InstanceMasks: ...

    def crop(self, box: np.ndarray) -> InstanceMasks: ...

    def pad(self, out_shape: tuple[int, int], pad_val: int = 0) -> InstanceMasks: ...

    def to_bitmap(self) -> BitmapMasks: ...

    def to_tensor(self) -> Tensor: ...

    @property
    def areas(self) -> np.ndarray: ...

    def crop_and_resize(self, boxes: Tensor, inds: Tensor, out_size: tuple[int, int]) -> Tensor: ...


def rescaled_shape(height: int, width: int, factor: float) -> tuple[int, int]:
    """(h', w') of an image scaled by ``factor``, rounded half up as mmcv's ``rescale_size``."""
    return int(height * factor + 0.5), int(width * factor + 0.5)


def crop_window(box: np.ndarray, height: int, width: int) -> tuple[int, int, int, int]:
    """(x1, y1, w, h) of the crop ``box`` (x1, y1, x2, y2) clipped to a width x height image;
    w and h are at least 1 (MMDetection's rule)."""
    x1, y1, x2, y2 = (int(v) for v in np.asarray(box).reshape(4))
    x1, x2 = (min(max(v, 0), width) for v in (x1, x2))
    y1, y2 = (min(max(v, 0), height) for v in (y1, y2))
    return x1, y1, max(x2 - x1, 1), max(y2 - y1, 1)


@dataclass
class BitmapMasks:
    """G masks as a (G, H, W) uint8 array in {0, 1} (module docstring)."""

    masks: np.ndarray  # (G, H, W) uint8
    height: int
    width: int

    def __post_init__(self) -> None:
        self.masks = np.asarray(self.masks, dtype=np.uint8).reshape(-1, self.height, self.width)

    @classmethod
    def empty(cls, height: int, width: int) -> BitmapMasks:
        return cls(np.zeros((0, height, width), np.uint8), height, width)

    def __len__(self) -> int:
        return self.masks.shape[0]

    def __getitem__(self, index: np.ndarray) -> BitmapMasks:
        """The masks ``index`` selects (a bool (G,) or an int array), as BitmapMasks."""
        return BitmapMasks(self.masks[np.asarray(index)], self.height, self.width)

    def resize(self, out_shape: tuple[int, int]) -> BitmapMasks:
        """(G, h', w') by nearest neighbour."""
        h, w = (int(v) for v in out_shape)
        if len(self) == 0:
            return BitmapMasks.empty(h, w)
        chunks = []
        for start in range(0, len(self), _CV2_CHANNELS):  # cv2 resizes (H, W, C) in one call
            stack = np.ascontiguousarray(self.masks[start:start + _CV2_CHANNELS].transpose(1, 2, 0))
            out = cv2.resize(stack, (w, h), interpolation=cv2.INTER_NEAREST)
            chunks.append(out.reshape(h, w, -1).transpose(2, 0, 1))  # (c, h', w')
        return BitmapMasks(np.concatenate(chunks), h, w)

    def rescale(self, factor: float) -> BitmapMasks:
        return self.resize(rescaled_shape(self.height, self.width, factor))

    def flip(self, direction: FlipDirection = "horizontal") -> BitmapMasks:
        axes = {"horizontal": (2,), "vertical": (1,), "diagonal": (1, 2)}[direction]
        return BitmapMasks(np.ascontiguousarray(np.flip(self.masks, axis=axes)),
                           self.height, self.width)

    def crop(self, box: np.ndarray) -> BitmapMasks:
        x1, y1, w, h = crop_window(box, self.height, self.width)
        cropped = np.zeros((len(self), h, w), np.uint8)  # a window past the image edge stays 0
        part = self.masks[:, y1:y1 + h, x1:x1 + w]
        cropped[:, :part.shape[1], :part.shape[2]] = part
        return BitmapMasks(cropped, h, w)

    def pad(self, out_shape: tuple[int, int], pad_val: int = 0) -> BitmapMasks:
        h, w = (int(v) for v in out_shape)
        if h < self.height or w < self.width:
            raise DataError(f"cannot pad {self.height}x{self.width} masks to the smaller {h}x{w}")
        padded = np.full((len(self), h, w), pad_val, np.uint8)
        padded[:, :self.height, :self.width] = self.masks
        return BitmapMasks(padded, h, w)

    def to_bitmap(self) -> BitmapMasks:
        return self

    def to_tensor(self) -> Tensor:
        """(G, H, W) uint8 tensor (shares the array's memory)."""
        return torch.from_numpy(np.ascontiguousarray(self.masks))

    @property
    def areas(self) -> np.ndarray:
        """(G,) float64: pixels in each mask."""
        return self.masks.sum(axis=(1, 2)).astype(np.float64)

    def crop_and_resize(self, boxes: Tensor, inds: Tensor, out_size: tuple[int, int]) -> Tensor:
        """(R, h, w) float {0, 1}: :func:`crop_and_resize` on these masks."""
        return crop_and_resize(self.to_tensor().to(boxes.device), boxes, inds, out_size)


@dataclass
class PolygonMasks:
    """G instances, each a list of polygon parts (2P,) in pixels (module docstring)."""

    polygons: list[list[Polygon]]
    height: int
    width: int

    def __post_init__(self) -> None:
        self.polygons = [[np.asarray(p, dtype=np.float64).reshape(-1) for p in parts]
                         for parts in self.polygons]

    def __len__(self) -> int:
        return len(self.polygons)

    def __getitem__(self, index: np.ndarray) -> PolygonMasks:
        index = np.asarray(index)
        picked = np.flatnonzero(index) if index.dtype == bool else index.reshape(-1)
        return PolygonMasks([self.polygons[int(k)] for k in picked], self.height, self.width)

    def _map(self, fn: Any, height: int, width: int) -> PolygonMasks:
        """Apply ``fn(xs, ys) -> (xs, ys)`` to every part."""
        out = []
        for parts in self.polygons:
            moved = []
            for p in parts:
                xs, ys = fn(p[0::2].copy(), p[1::2].copy())
                moved.append(np.stack([xs, ys], axis=1).reshape(-1))
            out.append(moved)
        return PolygonMasks(out, height, width)

    def resize(self, out_shape: tuple[int, int]) -> PolygonMasks:
        h, w = (int(v) for v in out_shape)
        sx, sy = w / self.width, h / self.height
        return self._map(lambda xs, ys: (xs * sx, ys * sy), h, w)

    def rescale(self, factor: float) -> PolygonMasks:
        return self.resize(rescaled_shape(self.height, self.width, factor))

    def flip(self, direction: FlipDirection = "horizontal") -> PolygonMasks:
        if direction not in ("horizontal", "vertical", "diagonal"):
            raise ValueError(f"flip direction must be horizontal, vertical or diagonal, "
                             f"got {direction!r}")
        fx = direction in ("horizontal", "diagonal")
        fy = direction in ("vertical", "diagonal")
        w, h = self.width, self.height
        return self._map(lambda xs, ys: (w - xs if fx else xs, h - ys if fy else ys), h, w)

    def crop(self, box: np.ndarray) -> PolygonMasks:
        x1, y1, w, h = crop_window(box, self.height, self.width)
        out = []
        for parts in self.polygons:
            kept = []
            for p in parts:
                ring = clip_polygon(p.reshape(-1, 2), x1, y1, x1 + w, y1 + h)  # (Q, 2)
                if len(ring) >= 3 and (np.ptp(ring, axis=0) > 0).all():  # not a point or line
                    kept.append((ring - np.array([x1, y1], np.float64)).reshape(-1))
            out.append(kept or [np.array(EMPTY_POLYGON)])
        return PolygonMasks(out, h, w)

    def pad(self, out_shape: tuple[int, int], pad_val: int = 0) -> PolygonMasks:
        h, w = (int(v) for v in out_shape)
        return PolygonMasks(self.polygons, h, w)

    def to_bitmap(self) -> BitmapMasks:
        """Rasterised with pycocotools (module docstring)."""
        if not self.polygons:
            return BitmapMasks.empty(self.height, self.width)
        return BitmapMasks(np.stack([polygons_to_bitmap(parts, self.height, self.width)
                                     for parts in self.polygons]), self.height, self.width)

    def to_tensor(self) -> Tensor:
        return self.to_bitmap().to_tensor()

    @property
    def areas(self) -> np.ndarray:
        """(G,) float64: the shoelace area of each instance, summed over its parts."""
        return np.array([sum(polygon_area(p.reshape(-1, 2)) for p in parts)
                         for parts in self.polygons], dtype=np.float64)

    def crop_and_resize(self, boxes: Tensor, inds: Tensor, out_size: tuple[int, int]) -> Tensor:
        """(R, h, w) float {0, 1}: instance ``inds[r]`` cut to ``boxes[r]`` and rasterised at
        ``out_size``, MMDetection's ``PolygonMasks.crop_and_resize`` (shift by the box corner,
        scale by out / max(box side, 1), then pycocotools)."""
        out_h, out_w = out_size
        rows = []
        for box, k in zip(boxes.detach().cpu().double().numpy(), inds.cpu().tolist()):
            bw, bh = max(box[2] - box[0], 1.0), max(box[3] - box[1], 1.0)
            sx, sy = out_w / max(bw, 0.1), out_h / max(bh, 0.1)
            parts = [np.stack([(p[0::2] - box[0]) * sx, (p[1::2] - box[1]) * sy], 1).reshape(-1)
                     for p in self.polygons[k]]
            rows.append(polygons_to_bitmap(parts, out_h, out_w))
        if not rows:
            return torch.zeros(0, out_h, out_w, device=boxes.device)
        return torch.from_numpy(np.stack(rows)).to(boxes.device, torch.float32)


def polygon_area(ring: np.ndarray) -> float:
    """Shoelace area of a (Q, 2) ring (absolute value; 0 for fewer than 3 points)."""
    if len(ring) < 3:
        return 0.0
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def clip_polygon(ring: np.ndarray, x1: float, y1: float, x2: float, y2: float) -> np.ndarray:
    """The (Q', 2) ring ``ring`` (Q, 2) clipped to the box [x1, x2] x [y1, y2]
    (Sutherland-Hodgman: one pass per box edge)."""
    # (axis, bound, keep the side where coordinate >= bound (True) or <= bound (False))
    for axis, bound, lower in ((0, x1, True), (0, x2, False), (1, y1, True), (1, y2, False)):
        if len(ring) == 0:
            break
        inside = ring[:, axis] >= bound if lower else ring[:, axis] <= bound  # (Q,)
        prev, prev_in = ring[-1], inside[-1]
        out = []
        for point, now_in in zip(ring, inside):
            if now_in != prev_in:  # the edge prev -> point crosses the bound
                t = (bound - prev[axis]) / (point[axis] - prev[axis])
                out.append(prev + t * (point - prev))
            if now_in:
                out.append(point)
            prev, prev_in = point, now_in
        ring = np.array(out, dtype=np.float64).reshape(-1, 2)
    return ring


def usable_parts(parts: Sequence[Any]) -> list[Polygon]:
    """The parts pycocotools can rasterise as polygons: an even number (>= 6) of coordinates.

    MMDetection drops the others; a 4-number part would otherwise be read by ``frPyObjects``
    as a box."""
    out = []
    for p in parts:
        arr = np.asarray(p, dtype=np.float64).reshape(-1)
        if arr.size >= 6 and arr.size % 2 == 0:
            out.append(arr)
    return out


def polygons_to_bitmap(parts: Sequence[Polygon], height: int, width: int) -> np.ndarray:
    """(height, width) uint8: the union of ``parts`` rasterised by pycocotools (frPyObjects,
    merge, decode: MMDetection's ``polygon_to_bitmap``). Unusable parts are left out."""
    parts = usable_parts(parts)
    if not parts:
        return np.zeros((height, width), np.uint8)
    rles = mask_utils.frPyObjects([p.tolist() for p in parts], height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(np.uint8)


def rle_to_bitmap(rle: dict[str, Any], height: int, width: int) -> np.ndarray:
    """(height, width) uint8 of a COCO RLE, uncompressed (``counts`` a list) or compressed
    (``counts`` a string); DataError when its ``size`` is not [height, width]."""
    size = [int(v) for v in rle["size"]]
    if size != [height, width]:
        raise DataError(f"RLE of size {size} (h, w) on an image of {height}x{width} (h x w)")
    counts = rle["counts"]
    if isinstance(counts, list):
        encoded = mask_utils.frPyObjects(rle, height, width)
    else:
        encoded = {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str)
                   else counts}
    return mask_utils.decode(encoded).astype(np.uint8)


def segmentation_to_bitmap(segm: Segmentation, height: int, width: int) -> np.ndarray:
    """(height, width) uint8 of a COCO ``segmentation`` (polygons, or RLE of either kind)."""
    if isinstance(segm, dict):
        return rle_to_bitmap(segm, height, width)
    return polygons_to_bitmap(segm, height, width)


def crop_and_resize(masks: Tensor, boxes: Tensor, inds: Tensor, out_size: tuple[int, int],
                    binarize: bool = True) -> Tensor:
    """Mask targets: ``masks[inds[r]]`` cut to ``boxes[r]`` and resampled to ``out_size``.

    Args:
        masks: (M, H, W) uint8 (or float) bitmaps, e.g. ``DetTargets.masks.flatten(0, 1)``
            (M = N * G; then ``inds = n * G + gt_slot``), on the device of ``boxes``.
        boxes: (R, 4) float (x1, y1, x2, y2) in mask pixels; MMDetection's ``mask_target``
            clips them to [0, W] x [0, H] before it calls this (the caller's step).
        inds: (R,) int64 in [0, M): which mask each box cuts.
        out_size: (h, w) of the targets, e.g. (28, 28).
        binarize: threshold the averages at 0.5 (MMDetection's default).

    Returns:
        (R, h, w) in ``boxes.dtype``: 0/1 with ``binarize``, else the RoIAlign averages.

    MMDetection's ``BitmapMasks.crop_and_resize``: RoIAlign (spatial scale 1, sampling ratio
    0 = adaptive, ``aligned=True``: pixel centres at +0.5) on the masks as one channel, then
    ``>= 0.5``. Batched, without a per-instance loop or a host sync; only min(R, M) masks are
    converted to float (R masks gathered when fewer boxes than masks, as MMDetection does).
    """
    out_h, out_w = out_size
    if boxes.shape[0] == 0 or masks.shape[0] == 0:
        return boxes.new_zeros((0, out_h, out_w))
    dtype = boxes.dtype
    inds = inds.to(device=masks.device, dtype=torch.long)
    if boxes.shape[0] <= masks.shape[0]:
        source = masks.index_select(0, inds).to(dtype)  # (R, H, W)
        batch_index = torch.arange(boxes.shape[0], device=boxes.device, dtype=dtype)
    else:
        source = masks.to(dtype)  # (M, H, W)
        batch_index = inds.to(boxes.device, dtype)
    rois = torch.cat([batch_index[:, None], boxes], dim=1)  # (R, 5)
    out = roi_align(source[:, None], rois, (out_h, out_w), spatial_scale=1.0,
                    sampling_ratio=0, aligned=True).squeeze(1)  # (R, h, w)
    return (out >= 0.5).to(dtype) if binarize else out
