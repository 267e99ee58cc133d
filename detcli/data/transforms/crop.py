"""RandomCrop: a random window of the image; boxes are shifted, clipped and filtered.

H, W: image height and width before the crop; G GT boxes (any key in ``bbox_fields``).
Masks (``gt_masks`` for ``gt_bboxes``, ``gt_masks_ignore`` for ``gt_bboxes_ignore``) are cut
to the same window (polygons clipped, see :mod:`detcli.structures.masks`) and lose the same
instances as their boxes, as MMDetection's ``RandomCrop`` does.
``crop_size`` is (h, w), as in MMDetection: pixels for the "absolute" types, fractions of the
image for the "relative" ones. Random choices use the global ``np.random`` state.
"""

from __future__ import annotations

from typing import Any, Literal, Union

import numpy as np
from pydantic import model_validator

from detcli.config.schema import Schema
from detcli.data.transforms.geometric import clip_boxes
from detcli.registry import TRANSFORMS

CropType = Literal["absolute", "absolute_range", "relative", "relative_range"]


def check_crop_args(crop_size: Any, crop_type: str) -> None:
    """Raise ValueError for a RandomCrop setting MMDetection would reject."""
    if len(crop_size) != 2:
        raise ValueError(f"crop_size must be (h, w), got {crop_size}")
    if crop_type in ("absolute", "absolute_range"):
        if not all(float(v).is_integer() and v > 0 for v in crop_size):
            raise ValueError(f"crop_type {crop_type!r} needs positive integer crop_size, got {crop_size}")
        if crop_type == "absolute_range" and crop_size[0] > crop_size[1]:
            raise ValueError(f"absolute_range crop_size must be (min, max), got {crop_size}")
    elif crop_type in ("relative", "relative_range"):
        if not all(0 < v <= 1 for v in crop_size):
            raise ValueError(f"crop_type {crop_type!r} needs crop_size in (0, 1], got {crop_size}")
    else:
        raise ValueError(f"crop_type must be one of {CropType.__args__}, got {crop_type!r}")


class RandomCropConfig(Schema):
    type: Literal["RandomCrop"] = "RandomCrop"
    crop_size: tuple[Union[int, float], Union[int, float]]  # (h, w): pixels, or fractions
    crop_type: CropType = "absolute"
    allow_negative_crop: bool = False
    bbox_clip_border: bool = True

    @model_validator(mode="after")
    def _check(self) -> RandomCropConfig:
        check_crop_args(self.crop_size, self.crop_type)
        return self


@TRANSFORMS.register(RandomCropConfig)
class RandomCrop:
    """Cut a random window of ``crop_size`` out of the image; boxes are shifted, clipped to the
    window and dropped (with their labels and masks) when nothing of them is left.

    When an image that had GT boxes loses all of them and ``allow_negative_crop`` is false, the
    step returns None (MMDetection's signal: the dataset draws another image). An image with
    no GT to begin with is kept.
    """

    def __init__(self, *, crop_size: tuple[float, float], crop_type: str = "absolute",
                 allow_negative_crop: bool = False, bbox_clip_border: bool = True) -> None:
        check_crop_args(crop_size, crop_type)
        self.crop_size = tuple(crop_size)
        self.crop_type = crop_type
        self.allow_negative_crop = allow_negative_crop
        self.bbox_clip_border = bbox_clip_border

    def __repr__(self) -> str:
        return f"RandomCrop(crop_size={self.crop_size}, crop_type={self.crop_type!r})"

    def crop_hw(self, h: int, w: int) -> tuple[int, int]:
        """Absolute (crop_h, crop_w) for an (h, w) image."""
        ch, cw = self.crop_size
        if self.crop_type == "absolute":
            return min(int(ch), h), min(int(cw), w)
        if self.crop_type == "absolute_range":
            lo, hi = int(ch), int(cw)
            return (int(np.random.randint(min(h, lo), min(h, hi) + 1)),
                    int(np.random.randint(min(w, lo), min(w, hi) + 1)))
        if self.crop_type == "relative_range":
            ch, cw = np.asarray(self.crop_size) + np.random.rand(2) * (1 - np.asarray(self.crop_size))
        return int(h * ch + 0.5), int(w * cw + 0.5)

    def __call__(self, results: dict[str, Any]) -> dict[str, Any] | None:
        img = results["img"]
        h, w = img.shape[:2]
        ch, cw = self.crop_hw(h, w)
        y0 = int(np.random.randint(0, h - ch + 1))
        x0 = int(np.random.randint(0, w - cw + 1))
        img = img[y0:y0 + ch, x0:x0 + cw]  # (ch, cw, 3)
        offset = np.array([x0, y0, x0, y0], dtype=np.float32)
        label_of = {"gt_bboxes": "gt_labels", "gt_bboxes_ignore": "gt_labels_ignore"}
        mask_of = {"gt_bboxes": "gt_masks", "gt_bboxes_ignore": "gt_masks_ignore"}
        window = np.array([x0, y0, x0 + cw, y0 + ch])
        bbox_fields = results.get("bbox_fields", [])
        for key in results.get("mask_fields", []):  # masks without their boxes: cut, none dropped
            if key not in (mask_of[b] for b in bbox_fields if b in mask_of):
                results[key] = results[key].crop(window)
        for key in bbox_fields:
            boxes = results[key] - offset  # (G, 4)
            if self.bbox_clip_border:
                boxes = clip_boxes(boxes, (ch, cw))
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # (G,)
            if key == "gt_bboxes" and len(keep) and not keep.any() and not self.allow_negative_crop:
                return None
            results[key] = boxes[keep]
            if label_of.get(key) in results:
                results[label_of[key]] = results[label_of[key]][keep]
            if mask_of.get(key) in results.get("mask_fields", []):
                results[mask_of[key]] = results[mask_of[key]][keep].crop(window)
        results["img"] = img
        results["img_shape"] = img.shape
        results["pad_shape"] = img.shape
        return results
