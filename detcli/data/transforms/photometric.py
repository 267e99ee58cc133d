"""Transforms that change pixel values only: Normalize and PhotoMetricDistortion.

H, W: image height and width. Images are (H, W, 3) arrays, BGR unless ``to_rgb`` converted
them. Boxes are untouched. Every operation works on the whole array at once (numpy/OpenCV).
"""

from __future__ import annotations

from typing import Any, Literal

import cv2
import numpy as np
from pydantic import Field, PositiveFloat, model_validator

from detcli.config.schema import Schema
from detcli.registry import TRANSFORMS


class NormalizeConfig(Schema):
    type: Literal["Normalize"] = "Normalize"
    mean: tuple[float, float, float]  # per channel, in the channel order after to_rgb
    std: tuple[PositiveFloat, PositiveFloat, PositiveFloat]
    to_rgb: bool = True


@TRANSFORMS.register(NormalizeConfig)
class Normalize:
    """``img = (img[..., ::-1 if to_rgb] - mean) / std`` as float32 (one OpenCV pass over the
    pixels); records ``img_norm_cfg``.

    ``mean`` and ``std`` are in the order of the output channels (RGB when ``to_rgb``), as in
    MMDetection (ImageNet: mean 123.675, 116.28, 103.53; std 58.395, 57.12, 57.375).
    """

    def __init__(self, *, mean: tuple[float, float, float], std: tuple[float, float, float],
                 to_rgb: bool = True) -> None:
        self.mean = np.array(mean, dtype=np.float32)  # (3,)
        self.std = np.array(std, dtype=np.float32)  # (3,)
        if self.mean.shape != (3,) or self.std.shape != (3,) or (self.std <= 0).any():
            raise ValueError(f"Normalize needs 3 means and 3 positive stds, got {mean}, {std}")
        self.to_rgb = to_rgb
        # One affine map per pixel, out[o] = (in[src(o)] - mean[o]) / std[o]: (3, 4) = [A | b].
        src = [2, 1, 0] if to_rgb else [0, 1, 2]
        self._affine = np.zeros((3, 4), dtype=np.float32)
        self._affine[[0, 1, 2], src] = 1.0 / self.std
        self._affine[:, 3] = -self.mean / self.std

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()}, to_rgb={self.to_rgb})"

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        img = results["img"].astype(np.float32)  # (H, W, 3), a new array
        results["img"] = cv2.transform(img, self._affine)  # (H, W, 3): swap, subtract, scale
        results["img_norm_cfg"] = {"mean": self.mean.copy(), "std": self.std.copy(),
                                   "to_rgb": self.to_rgb}
        return results


class PhotoMetricDistortionConfig(Schema):
    type: Literal["PhotoMetricDistortion"] = "PhotoMetricDistortion"
    brightness_delta: float = Field(32, ge=0, le=255)
    contrast_range: tuple[PositiveFloat, PositiveFloat] = (0.5, 1.5)
    saturation_range: tuple[PositiveFloat, PositiveFloat] = (0.5, 1.5)
    hue_delta: float = Field(18, ge=0, le=180)

    @model_validator(mode="after")
    def _check(self) -> PhotoMetricDistortionConfig:
        for name in ("contrast_range", "saturation_range"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name} must be (low, high) with low <= high, got {(lo, hi)}")
        return self


@TRANSFORMS.register(PhotoMetricDistortionConfig)
class PhotoMetricDistortion:
    """MMDetection's colour jitter on a BGR image with values in [0, 255]; each step runs with
    probability 0.5:

    1. brightness: add a delta from [-brightness_delta, brightness_delta];
    2. contrast (here or at step 6, chosen at random): multiply by a factor from contrast_range;
    3. to HSV (H in degrees [0, 360), S in [0, 1], V in [0, 255]);
    4. saturation: multiply S by a factor from saturation_range;
    5. hue: add a delta from [-hue_delta, hue_delta] degrees, wrapped into [0, 360);
    6. back to BGR, then contrast if not done at step 2;
    7. random permutation of the three channels.

    Unlike MMDetection 2.x the values are clipped to [0, 255] after brightness, contrast and
    saturation, so the HSV conversion never sees negative values. Output is float32.
    """

    def __init__(self, *, brightness_delta: float = 32, contrast_range: tuple[float, float] = (0.5, 1.5),
                 saturation_range: tuple[float, float] = (0.5, 1.5), hue_delta: float = 18) -> None:
        self.brightness_delta = float(brightness_delta)
        self.contrast_range = tuple(contrast_range)
        self.saturation_range = tuple(saturation_range)
        self.hue_delta = float(hue_delta)

    def __repr__(self) -> str:
        return (f"PhotoMetricDistortion(brightness_delta={self.brightness_delta}, "
                f"contrast_range={self.contrast_range}, saturation_range={self.saturation_range}, "
                f"hue_delta={self.hue_delta})")

    def _contrast(self, img: np.ndarray) -> None:
        if np.random.randint(2):
            img *= np.random.uniform(*self.contrast_range)
            np.clip(img, 0, 255, out=img)

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        img = results["img"].astype(np.float32)  # (H, W, 3), a new array
        if np.random.randint(2):
            img += np.random.uniform(-self.brightness_delta, self.brightness_delta)
            np.clip(img, 0, 255, out=img)
        contrast_first = np.random.randint(2) == 1
        if contrast_first:
            self._contrast(img)
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)  # (H, W, 3): h, s, v
        if np.random.randint(2):
            hsv[..., 1] *= np.random.uniform(*self.saturation_range)
            np.clip(hsv[..., 1], 0, 1, out=hsv[..., 1])
        if np.random.randint(2):
            hsv[..., 0] = np.mod(hsv[..., 0] + np.random.uniform(-self.hue_delta, self.hue_delta), 360)
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)  # (H, W, 3)
        if not contrast_first:
            self._contrast(img)
        if np.random.randint(2):
            img = np.ascontiguousarray(img[..., np.random.permutation(3)])  # (H, W, 3)
        results["img"] = img
        return results
