"""Reading instance masks from annotations: COCO segmentations into the mask structures.

G instances of one image of height H and width W. A dataset hands ``LoadAnnotations`` one COCO
``segmentation`` per GT box (``ann_info["masks"]``): polygons ``[[x0, y0, x1, y1, ...], ...]``
in pixels, or RLE ``{"size": [H, W], "counts": [...] | "..."}`` (uncompressed or compressed).
A format that has no masks hands a :class:`NoMasks` saying why instead.

What is usable follows MMDetection 3.3's ``LoadAnnotations._process_masks``: polygon parts
with fewer than 6 numbers (3 points) or an odd count are dropped; an instance left with no
part, a malformed RLE dict, or an RLE with ``poly2mask = false`` is *unusable* (MMDetection's
``ignore_flag``: the caller turns its box into an ignore box). An annotation without a
``segmentation`` and an RLE whose ``size`` is not the image's are errors
(:class:`~detcli.errors.DataError` naming the file and annotation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from detcli.errors import DataError
from detcli.structures.masks import (
    EMPTY_POLYGON,
    BitmapMasks,
    InstanceMasks,
    PolygonMasks,
    polygons_to_bitmap,
    rle_to_bitmap,
    usable_parts,
)


@dataclass(frozen=True)
class NoMasks:
    """A dataset without instance masks; ``reason`` names the dataset and its file."""

    reason: str


@dataclass
class LoadedMasks:
    """The G masks of one image and which of them are usable (module docstring)."""

    masks: InstanceMasks  # G masks; an unusable one is empty
    usable: np.ndarray  # (G,) bool


def is_rle(segm: Any) -> bool:
    """A dict with ``size`` and ``counts`` (a list: uncompressed; a string: compressed)."""
    return (isinstance(segm, dict) and segm.get("size") is not None
            and isinstance(segm.get("counts"), (list, str, bytes)))


def load_masks(segms: Sequence[Any], height: int, width: int, poly2mask: bool = True,
               ann_ids: Sequence[str] | None = None, source: str = "the annotation file",
               ) -> LoadedMasks:
    """The masks of one image from its G segmentations.

    Args:
        segms: G COCO segmentations (None where the annotation has none, a NoMasks where it
            cannot have one: errors).
        height, width: the image's size, which every mask takes.
        poly2mask: rasterise now (BitmapMasks), else keep polygons (PolygonMasks).
        ann_ids: G names for messages ("annotation 17", "line 3").
        source: the annotation file, for messages.
    """
    names = list(ann_ids) if ann_ids is not None else [f"instance {k}" for k in range(len(segms))]
    usable = np.ones(len(segms), dtype=bool)
    bitmaps, polygons = [], []
    for k, segm in enumerate(segms):
        where = f"{source}: {names[k]}"
        if isinstance(segm, NoMasks):  # e.g. a YOLO box line among polygon lines
            raise DataError(f"{where} {segm.reason}")
        if segm is None:
            raise DataError(f"{where} has no `segmentation`, and the pipeline loads masks "
                            "(LoadAnnotations with_mask = true)")
        if isinstance(segm, dict):
            if poly2mask and is_rle(segm):
                try:
                    bitmaps.append(rle_to_bitmap(segm, height, width))
                except DataError as exc:
                    raise DataError(f"{where}: {exc}") from None
                continue
            usable[k] = False  # a malformed RLE, or an RLE kept as polygons: ignored (MMDetection)
            parts: list[np.ndarray] = []
        elif isinstance(segm, (list, tuple)):
            parts = usable_parts(segm)
            usable[k] = bool(parts)
        else:
            raise DataError(f"{where}: `segmentation` is a {type(segm).__name__}; expected a "
                            "list of polygons or an RLE dict with `size` and `counts`")
        if poly2mask:
            bitmaps.append(polygons_to_bitmap(parts, height, width))
        else:
            polygons.append(parts or [np.array(EMPTY_POLYGON)])
    if poly2mask:
        stacked = np.stack(bitmaps) if bitmaps else np.zeros((0, height, width), np.uint8)
        return LoadedMasks(BitmapMasks(stacked, height, width), usable)
    return LoadedMasks(PolygonMasks(polygons, height, width), usable)
