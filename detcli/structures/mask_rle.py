"""Binary instance masks as COCO run-length encoding: how detections carry their masks.

D masks of one image of height H and width W. A pasted mask is a whole (H, W) bitmap; a
validation set's worth of them would not fit in memory, so once a detector's masks are pasted
they are encoded (:func:`encode_masks`) and the bitmaps dropped: :class:`MaskRLE` is a few
hundred bytes per mask instead of H x W.

The encoding is pycocotools' compressed RLE (``mask.encode`` of a Fortran-ordered (H, W, D)
uint8 array, MMDetection's ``encode_mask_results``): runs of 0s and 1s down the columns
(column-major), starting with a run of 0s, the counts written as pycocotools' ASCII string.
:meth:`MaskRLE.to_coco` gives the COCO results ``segmentation`` dict ``{"size": [H, W],
"counts": str}`` that ``COCO.loadRes`` and iouType "segm" read, and that JSON can hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pycocotools.mask as mask_utils
import torch
from torch import Tensor

from detcli.errors import DetError


@dataclass(frozen=True)
class MaskRLE:
    """One (height, width) binary mask in pycocotools' compressed RLE (module docstring)."""

    height: int
    width: int
    counts: str  # pycocotools' compressed counts, ASCII

    def to_coco(self) -> dict[str, Any]:
        """COCO ``segmentation``: ``{"size": [H, W], "counts": str}``."""
        return {"size": [self.height, self.width], "counts": self.counts}

    @classmethod
    def from_coco(cls, segmentation: dict[str, Any]) -> MaskRLE:
        """A compressed COCO RLE dict (``counts`` a str or bytes) as a MaskRLE."""
        counts = segmentation["counts"]
        if isinstance(counts, list):
            raise DetError("MaskRLE holds compressed RLE; this one is uncompressed (counts is a "
                           "list): encode it with pycocotools.mask.frPyObjects first")
        h, w = (int(v) for v in segmentation["size"])
        return cls(h, w, counts.decode("ascii") if isinstance(counts, bytes) else str(counts))

    def _pycoco(self) -> dict[str, Any]:
        return {"size": [self.height, self.width], "counts": self.counts.encode("ascii")}

    def decode(self) -> np.ndarray:
        """(H, W) bool bitmap."""
        return mask_utils.decode(self._pycoco()).astype(bool)

    @property
    def area(self) -> int:
        """Foreground pixels."""
        return int(mask_utils.area(self._pycoco()))


def encode_masks(masks: Tensor | np.ndarray) -> list[MaskRLE]:
    """(D, H, W) bool (or 0/1) masks, tensor or array on any device -> D :class:`MaskRLE`,
    one pycocotools call for the image."""
    if isinstance(masks, Tensor):
        masks = masks.detach().to("cpu", torch.uint8).numpy()
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise DetError(f"encode_masks takes (D, H, W) masks, got shape {tuple(masks.shape)}")
    if masks.shape[0] == 0:
        return []
    stacked = np.asfortranarray(masks.astype(np.uint8, copy=False).transpose(1, 2, 0))  # (H, W, D)
    height, width = masks.shape[1:]
    return [MaskRLE(height, width, rle["counts"].decode("ascii"))
            for rle in mask_utils.encode(stacked)]


def decode_masks(rles: Sequence[MaskRLE], height: int, width: int) -> np.ndarray:
    """D :class:`MaskRLE` of one (height, width) image -> (D, H, W) bool; a mask of another
    size is a DetError."""
    wrong = [(r.height, r.width) for r in rles if (r.height, r.width) != (height, width)]
    if wrong:
        raise DetError(f"masks of size {wrong[0]} (h, w) on an image of {height}x{width}")
    if not rles:
        return np.zeros((0, height, width), dtype=bool)
    decoded = mask_utils.decode([r._pycoco() for r in rles])  # (H, W, D) uint8
    return np.ascontiguousarray(decoded.transpose(2, 0, 1)).astype(bool)
