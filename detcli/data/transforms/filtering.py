"""FilterAnnotations: drop GT boxes too small to train on (MMDetection 3.3's).

G GT boxes (``gt_bboxes``, with ``gt_labels`` and ``gt_masks``), I ignore boxes
(``gt_bboxes_ignore``). A box is kept when ``by_box`` and its width > min_w and height >
min_h (``min_gt_bbox_wh``), and when ``by_mask`` and its mask has at least
``min_gt_mask_area`` pixels (both tests when both are on; ignore boxes by the box test only).
A sample with no box at all passes unchanged. When no box (GT or ignore) is left,
``keep_empty = true`` (MMDetection's default) returns None, "draw another image"; false
keeps the sample without them.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from detcli.config.schema import Schema
from detcli.errors import ConfigError
from detcli.registry import TRANSFORMS


class FilterAnnotationsConfig(Schema):
    type: Literal["FilterAnnotations"] = "FilterAnnotations"
    min_gt_bbox_wh: tuple[float, float] = (1, 1)  # (w, h)
    min_gt_mask_area: int = Field(1, ge=0)
    by_box: bool = True
    by_mask: bool = False
    keep_empty: bool = True

    @model_validator(mode="after")
    def _check(self) -> FilterAnnotationsConfig:
        if not (self.by_box or self.by_mask):
            raise ValueError("FilterAnnotations needs by_box or by_mask (or both)")
        return self


def large_enough(boxes: np.ndarray, min_wh: tuple[float, float]) -> np.ndarray:
    """(G,) bool: width > min_w and height > min_h."""
    return ((boxes[:, 2] - boxes[:, 0]) > min_wh[0]) & ((boxes[:, 3] - boxes[:, 1]) > min_wh[1])


@TRANSFORMS.register(FilterAnnotationsConfig)
class FilterAnnotations:
    """Drop small boxes (module docstring)."""

    def __init__(self, *, min_gt_bbox_wh: tuple[float, float] = (1, 1), min_gt_mask_area: int = 1,
                 by_box: bool = True, by_mask: bool = False, keep_empty: bool = True) -> None:
        if not (by_box or by_mask):
            raise ValueError("FilterAnnotations needs by_box or by_mask (or both)")
        self.min_gt_bbox_wh = tuple(min_gt_bbox_wh)
        self.min_gt_mask_area = min_gt_mask_area
        self.by_box = by_box
        self.by_mask = by_mask
        self.keep_empty = keep_empty

    def __repr__(self) -> str:
        return (f"FilterAnnotations(min_gt_bbox_wh={self.min_gt_bbox_wh}, by_box={self.by_box}, "
                f"by_mask={self.by_mask}, keep_empty={self.keep_empty})")

    def _keep_gt(self, results: dict[str, Any], boxes: np.ndarray) -> np.ndarray:
        keep = np.ones(len(boxes), dtype=bool)
        if self.by_box:
            keep &= large_enough(boxes, self.min_gt_bbox_wh)
        if self.by_mask:
            if "gt_masks" not in results:
                raise ConfigError("FilterAnnotations(by_mask = true) needs instance masks: the "
                                  "pipeline loads none", hint="set with_mask = true in "
                                  "LoadAnnotations, or by_mask = false")
            keep &= results["gt_masks"].areas >= self.min_gt_mask_area
        return keep

    def __call__(self, results: dict[str, Any]) -> dict[str, Any] | None:
        boxes = np.asarray(results["gt_bboxes"], np.float32).reshape(-1, 4)  # (G, 4)
        ignore = np.asarray(results.get("gt_bboxes_ignore", np.zeros((0, 4))),
                            np.float32).reshape(-1, 4)  # (I, 4)
        if not len(boxes) and not len(ignore):
            return results
        keep = self._keep_gt(results, boxes)  # (G,)
        keep_ignore = large_enough(ignore, self.min_gt_bbox_wh) if self.by_box \
            else np.ones(len(ignore), dtype=bool)  # (I,)
        if not keep.any() and not keep_ignore.any() and self.keep_empty:
            return None
        for key in ("gt_bboxes", "gt_labels", "gt_masks"):
            if key in results:
                results[key] = results[key][keep]
        if "gt_bboxes_ignore" in results:
            results["gt_bboxes_ignore"] = results["gt_bboxes_ignore"][keep_ignore]
        return results
