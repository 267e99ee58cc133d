"""YOLOXHSVRandomAug: random gains on hue, saturation and value (MMDetection 3.3's, from YOLOX).

H, W: image size. The image is (H, W, 3) uint8 BGR; boxes are untouched.

Gains g = uniform(-1, 1, 3) x (hue_delta, saturation_delta, value_delta), each kept with
probability 1/2 (times randint(0, 2)), truncated to int16; drawn from numpy's global state in
that order, as MMDetection. OpenCV's 8-bit HSV (H in [0, 180), S and V in [0, 255]):
H = (H + g0) mod 180, S = clip(S + g1, 0, 255), V = clip(V + g2, 0, 255), then back to BGR.
"""

from __future__ import annotations

from typing import Any, Literal

import cv2
import numpy as np
from pydantic import Field

from detcli.config.schema import Schema
from detcli.errors import DataError
from detcli.registry import TRANSFORMS


class YOLOXHSVRandomAugConfig(Schema):
    type: Literal["YOLOXHSVRandomAug"] = "YOLOXHSVRandomAug"
    hue_delta: int = Field(5, ge=0, le=180)
    saturation_delta: int = Field(30, ge=0, le=255)
    value_delta: int = Field(30, ge=0, le=255)


def hsv_shift(img: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 BGR with the (3,) int16 ``gains`` added in HSV (module docstring)."""
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV).astype(np.int16)  # (H, W, 3)
    hsv[..., 0] = (hsv[..., 0] + gains[0]) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] + gains[1], 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] + gains[2], 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)


@TRANSFORMS.register(YOLOXHSVRandomAugConfig)
class YOLOXHSVRandomAug:
    """Random HSV gains (module docstring)."""

    def __init__(self, *, hue_delta: int = 5, saturation_delta: int = 30,
                 value_delta: int = 30) -> None:
        self.deltas = np.array([hue_delta, saturation_delta, value_delta], dtype=np.float64)

    def __repr__(self) -> str:
        h, s, v = self.deltas.astype(int).tolist()
        return f"YOLOXHSVRandomAug(hue_delta={h}, saturation_delta={s}, value_delta={v})"

    def draw_gains(self) -> np.ndarray:
        gains = np.random.uniform(-1, 1, 3) * self.deltas
        gains *= np.random.randint(0, 2, 3)
        return gains.astype(np.int16)  # (3,)

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        img = results["img"]
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise DataError(f"YOLOXHSVRandomAug needs an (H, W, 3) uint8 BGR image, got "
                            f"{img.dtype} {img.shape}; put it before Normalize and "
                            "PhotoMetricDistortion")
        results["img"] = hsv_shift(img, self.draw_gains())
        return results
