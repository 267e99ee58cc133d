"""RandomAffine: rotate, scale, shear and translate the image and its boxes (MMDetection 3.3's).

H, W: the output size, the input's plus twice ``border`` (MMDetection's (x, y) order: a
negative border, as after a Mosaic, shrinks it); G GT boxes (every key of ``bbox_fields``).

The warp is M = T @ Sh @ R @ S (3 x 3, float32), drawn in this order from numpy's global
state (as MMDetection's): a rotation in [-max_rotate_degree, max_rotate_degree] degrees (R,
about the origin), a scale in ``scaling_ratio_range`` (S), shear angles x and y in
[-max_shear_degree, max_shear_degree] (Sh = [[1, tan x, 0], [tan y, 1, 0], [0, 0, 1]]) and a
translation of [-max_translate_ratio, max_translate_ratio] x (W, H) (T). The image is
``cv2.warpPerspective(img, M, (W, H))`` with ``border_val``; a box becomes the smallest box
holding its four projected corners, clipped to (H, W) (``bbox_clip_border``) and dropped
unless inside it (x1 < W, y1 < H, x2 > 0, y2 > 0). Instance masks are refused.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import Field, model_validator

from detcli.config.schema import Schema
from detcli.data.transforms.mix import bbox_keys, clip, inside, keep_boxes
from detcli.data.transforms.mixing import refuse_masks
from detcli.registry import TRANSFORMS


def rotation_matrix(degrees: float) -> np.ndarray:
    r = math.radians(degrees)
    return np.array([[np.cos(r), -np.sin(r), 0.0], [np.sin(r), np.cos(r), 0.0], [0.0, 0.0, 1.0]],
                    dtype=np.float32)


def scaling_matrix(ratio: float) -> np.ndarray:
    return np.array([[ratio, 0.0, 0.0], [0.0, ratio, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)


def shear_matrix(x_degrees: float, y_degrees: float) -> np.ndarray:
    tx, ty = np.tan(math.radians(x_degrees)), np.tan(math.radians(y_degrees))
    return np.array([[1.0, tx, 0.0], [ty, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)


def translation_matrix(x: float, y: float) -> np.ndarray:
    return np.array([[1.0, 0.0, x], [0.0, 1.0, y], [0.0, 0.0, 1.0]], dtype=np.float32)


def project_boxes(boxes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(G, 4) boxes -> (G, 4): the extent of their four corners under the 3 x 3 ``matrix``."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    xs = np.stack([x1, x2, x1, x2], axis=1)  # (G, 4) corners' x
    ys = np.stack([y1, y1, y2, y2], axis=1)  # (G, 4) corners' y
    corners = np.stack([xs, ys, np.ones_like(xs)], axis=1)  # (G, 3, 4) homogeneous
    moved = matrix.astype(np.float32) @ corners  # (G, 3, 4)
    px, py = moved[:, 0] / moved[:, 2], moved[:, 1] / moved[:, 2]  # (G, 4) each
    return np.stack([px.min(1), py.min(1), px.max(1), py.max(1)], axis=1).astype(np.float32)


class RandomAffineConfig(Schema):
    type: Literal["RandomAffine"] = "RandomAffine"
    max_rotate_degree: float = Field(10.0, ge=0)
    max_translate_ratio: float = Field(0.1, ge=0, le=1)
    scaling_ratio_range: tuple[float, float] = (0.5, 1.5)
    max_shear_degree: float = Field(2.0, ge=0)
    border: tuple[int, int] = (0, 0)  # (x, y) added on each side
    border_val: tuple[int, int, int] = (114, 114, 114)
    bbox_clip_border: bool = True

    @model_validator(mode="after")
    def _check(self) -> RandomAffineConfig:
        lo, hi = self.scaling_ratio_range
        if not 0 < lo <= hi:
            raise ValueError(f"scaling_ratio_range must be (min, max) with 0 < min <= max, "
                             f"got {self.scaling_ratio_range}")
        return self


@TRANSFORMS.register(RandomAffineConfig)
class RandomAffine:
    """A random affine warp of the image and its boxes (module docstring)."""

    def __init__(self, *, max_rotate_degree: float = 10.0, max_translate_ratio: float = 0.1,
                 scaling_ratio_range: tuple[float, float] = (0.5, 1.5),
                 max_shear_degree: float = 2.0, border: tuple[int, int] = (0, 0),
                 border_val: tuple[int, int, int] = (114, 114, 114),
                 bbox_clip_border: bool = True) -> None:
        self.max_rotate_degree = max_rotate_degree
        self.max_translate_ratio = max_translate_ratio
        self.scaling_ratio_range = tuple(scaling_ratio_range)
        self.max_shear_degree = max_shear_degree
        self.border = tuple(border)
        self.border_val = tuple(border_val)
        self.bbox_clip_border = bbox_clip_border

    def __repr__(self) -> str:
        return (f"RandomAffine(max_rotate_degree={self.max_rotate_degree}, "
                f"max_translate_ratio={self.max_translate_ratio}, "
                f"scaling_ratio_range={self.scaling_ratio_range}, "
                f"max_shear_degree={self.max_shear_degree}, border={self.border})")

    def draw_matrix(self, height: int, width: int) -> np.ndarray:
        """M = T @ Sh @ R @ S, drawn in MMDetection's order (module docstring)."""
        degrees = np.random.uniform(-self.max_rotate_degree, self.max_rotate_degree)
        rotation = rotation_matrix(degrees)
        scaling = scaling_matrix(np.random.uniform(*self.scaling_ratio_range))
        shear = shear_matrix(np.random.uniform(-self.max_shear_degree, self.max_shear_degree),
                             np.random.uniform(-self.max_shear_degree, self.max_shear_degree))
        tx = np.random.uniform(-self.max_translate_ratio, self.max_translate_ratio) * width
        ty = np.random.uniform(-self.max_translate_ratio, self.max_translate_ratio) * height
        return translation_matrix(tx, ty) @ shear @ rotation @ scaling

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        refuse_masks(results, "RandomAffine")
        img = results["img"]
        height = img.shape[0] + self.border[1] * 2
        width = img.shape[1] + self.border[0] * 2
        matrix = self.draw_matrix(height, width)
        return warp(results, matrix, (height, width), self.border_val, self.bbox_clip_border)


def warp(results: dict[str, Any], matrix: np.ndarray, hw: tuple[int, int],
         border_val: tuple[int, int, int], bbox_clip_border: bool = True) -> dict[str, Any]:
    """``results`` warped by the 3 x 3 ``matrix`` into an ``hw`` = (H, W) image."""
    height, width = hw
    img = cv2.warpPerspective(results["img"], matrix, dsize=(width, height),
                              borderValue=border_val)  # (H, W, 3)
    results["img"] = img
    results["img_shape"] = img.shape
    results["pad_shape"] = img.shape
    for key in bbox_keys(results):
        boxes = np.asarray(results.get(key, np.zeros((0, 4))), np.float32).reshape(-1, 4)
        if not len(boxes):
            continue
        boxes = project_boxes(boxes, matrix)
        if bbox_clip_border:
            boxes = clip(boxes, (height, width))
        results[key] = boxes
        keep_boxes(results, key, inside(boxes, (height, width)))
    return results
