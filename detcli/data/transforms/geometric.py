"""Transforms that move pixels, and the boxes and masks with them: Resize, RandomFlip, Pad.

H, W: image height and width before the step; G GT boxes (any key in ``bbox_fields``).
Instance masks (any key in ``mask_fields``: ``gt_masks``, an
:class:`~detcli.structures.masks.InstanceMasks`) follow the image: resized to its new size,
flipped the same way, padded with zeros (``pad_val["masks"]``, default 0) to its padded size.

Each step records what it did, so predictions map back to the original image:
``scale_factor`` (float32 [sx, sy, sx, sy], input -> resized), ``flip`` / ``flip_direction``,
``img_shape`` (the image after the step, before padding) and ``pad_shape``. Boxes stay
(x1, y1, x2, y2) in pixels of the current image. Sizes written as pairs follow MMDetection:
``img_scale`` pairs are (w, h) -- with ``keep_ratio`` only the long and short edge matter --
while ``Pad.size`` is (h, w). RandomCrop lives in :mod:`detcli.data.transforms.crop`.

Random choices use the global ``np.random`` state, which the data loader seeds per worker.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

import cv2
import numpy as np
from pydantic import PositiveInt, model_validator

from detcli.config.schema import Maybe, Schema
from detcli.errors import DataError
from detcli.registry import TRANSFORMS

ScalePair = tuple[PositiveInt, PositiveInt]
INTERPOLATIONS = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC,
                  "area": cv2.INTER_AREA, "lanczos": cv2.INTER_LANCZOS4}


def rescale_size(w: int, h: int, scale: tuple[int, int]) -> tuple[int, int]:
    """MMCV's keep-ratio rule: the largest (w', h') with long edge <= max(scale) and short edge
    <= min(scale), each rounded half up (``int(x * factor + 0.5)``)."""
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(w * factor + 0.5), int(h * factor + 0.5)


def check_resize_args(img_scale: list[tuple[int, int]] | None, multiscale_mode: str,
                      ratio_range: tuple[float, float] | None) -> None:
    """Raise ValueError for a Resize setting MMDetection would reject."""
    if multiscale_mode not in ("range", "value"):
        raise ValueError(f"multiscale_mode must be 'range' or 'value', got {multiscale_mode!r}")
    if ratio_range is not None:
        if img_scale is None or len(img_scale) != 1:
            raise ValueError(f"ratio_range {ratio_range} needs exactly one img_scale, got {img_scale}")
        if not 0 < ratio_range[0] <= ratio_range[1]:
            raise ValueError(f"ratio_range must be (min, max) with 0 < min <= max, got {ratio_range}")
    elif img_scale is not None and len(img_scale) > 1 and multiscale_mode == "range" \
            and len(img_scale) != 2:
        raise ValueError(
            f"multiscale_mode 'range' takes two img_scale pairs (lower and upper bound), got "
            f"{len(img_scale)}; use multiscale_mode = 'value' to choose among several")


class ResizeConfig(Schema):
    type: Literal["Resize"] = "Resize"
    img_scale: Maybe[Union[ScalePair, list[ScalePair]]] = None  # None: taken from results["scale"]
    multiscale_mode: Literal["range", "value"] = "range"
    ratio_range: Maybe[tuple[float, float]] = None
    keep_ratio: bool = True
    bbox_clip_border: bool = True
    interpolation: Literal["nearest", "bilinear", "bicubic", "area", "lanczos"] = "bilinear"

    @model_validator(mode="after")
    def _check(self) -> ResizeConfig:
        check_resize_args(scale_list(self.img_scale), self.multiscale_mode, self.ratio_range)
        return self


def scale_list(img_scale: Any) -> list[tuple[int, int]] | None:
    if img_scale is None:
        return None
    if len(img_scale) == 2 and all(isinstance(v, (int, np.integer)) for v in img_scale):
        return [tuple(img_scale)]
    return [tuple(s) for s in img_scale]


@TRANSFORMS.register(ResizeConfig)
class Resize:
    """Resize the image to a (chosen) scale and scale the boxes with it.

    The scale is ``results["scale"]`` when set (MultiScaleFlipAug sets it), else computed from
    a float ``results["scale_factor"]``, else drawn from ``img_scale``: one pair; several with
    ``multiscale_mode="value"`` (pick one); two with ``"range"`` (long and short edge drawn
    uniformly between the pairs'); or one pair times a ratio from ``ratio_range``.
    """

    def __init__(self, *, img_scale: Any = None, multiscale_mode: str = "range",
                 ratio_range: tuple[float, float] | None = None, keep_ratio: bool = True,
                 bbox_clip_border: bool = True, interpolation: str = "bilinear") -> None:
        self.img_scale = scale_list(img_scale)  # the settings were checked by ResizeConfig
        self.multiscale_mode = multiscale_mode
        self.ratio_range = ratio_range
        self.keep_ratio = keep_ratio
        self.bbox_clip_border = bbox_clip_border
        self.interpolation = INTERPOLATIONS[interpolation]

    def __repr__(self) -> str:
        return (f"Resize(img_scale={self.img_scale}, multiscale_mode={self.multiscale_mode!r}, "
                f"ratio_range={self.ratio_range}, keep_ratio={self.keep_ratio})")

    def choose_scale(self) -> tuple[tuple[int, int], int | None]:
        """(scale, index into img_scale or None) for one image."""
        scales = self.img_scale
        if not scales:
            raise DataError("Resize has no img_scale and the results carry no 'scale'")
        if self.ratio_range is not None:
            ratio = np.random.uniform(*self.ratio_range)
            return (int(scales[0][0] * ratio), int(scales[0][1] * ratio)), None
        if len(scales) == 1:
            return scales[0], 0
        if self.multiscale_mode == "value":
            idx = int(np.random.randint(len(scales)))
            return scales[idx], idx
        longs, shorts = [max(s) for s in scales], [min(s) for s in scales]
        long_edge = int(np.random.randint(min(longs), max(longs) + 1))
        short_edge = int(np.random.randint(min(shorts), max(shorts) + 1))
        return (long_edge, short_edge), None

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        img = results["img"]
        h, w = img.shape[:2]
        if "scale" not in results:
            factor = results.get("scale_factor")
            if isinstance(factor, float):  # MultiScaleFlipAug(scale_factor=...)
                results["scale"], results["scale_idx"] = (int(w * factor), int(h * factor)), None
            else:
                results["scale"], results["scale_idx"] = self.choose_scale()
        scale = tuple(results["scale"])
        new_w, new_h = rescale_size(w, h, scale) if self.keep_ratio else scale
        if new_w < 1 or new_h < 1:
            raise DataError(f"Resize of a {w}x{h} image to scale {scale} leaves no pixels")
        img = cv2.resize(img, (new_w, new_h), interpolation=self.interpolation)  # (h', w', 3)
        factor = np.array([new_w / w, new_h / h] * 2, dtype=np.float32)  # (4,) sx, sy, sx, sy
        results["img"] = img
        results["img_shape"] = img.shape
        results["pad_shape"] = img.shape  # in case no Pad follows
        results["scale_factor"] = factor
        results["keep_ratio"] = self.keep_ratio
        for key in results.get("bbox_fields", []):
            boxes = results[key] * factor  # (G, 4)
            if self.bbox_clip_border:
                boxes = clip_boxes(boxes, img.shape[:2])
            results[key] = boxes.astype(np.float32)
        for key in results.get("mask_fields", []):
            results[key] = results[key].resize((new_h, new_w))  # nearest / polygons scaled
        return results


def clip_boxes(boxes: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(G, 4) boxes clipped to x in [0, w], y in [0, h]."""
    h, w = hw
    return np.clip(boxes, 0, np.array([w, h, w, h], dtype=boxes.dtype))


Direction = Literal["horizontal", "vertical", "diagonal"]
_CV2_FLIP = {"horizontal": 1, "vertical": 0, "diagonal": -1}


def flip_boxes(boxes: np.ndarray, hw: tuple[int, int], direction: str) -> np.ndarray:
    """(G, 4) boxes mirrored in an image of size ``hw`` = (h, w), MMDetection's way: a
    horizontal flip maps x1, x2 to w - x2, w - x1 (pixel edges, so flipping twice is exact)."""
    if direction not in _CV2_FLIP:
        raise ValueError(f"flip direction must be one of {sorted(_CV2_FLIP)}, got {direction!r}")
    h, w = hw
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]  # (G,) each
    if direction in ("horizontal", "diagonal"):
        x1, x2 = w - x2, w - x1
    if direction in ("vertical", "diagonal"):
        y1, y2 = h - y2, h - y1
    return np.stack([x1, y1, x2, y2], axis=1).astype(boxes.dtype)  # (G, 4)


def check_flip_args(flip_ratio: Any, direction: Any) -> None:
    """Raise ValueError for a RandomFlip setting MMDetection would reject."""
    directions = direction if isinstance(direction, list) else [direction]
    bad = [d for d in directions if d not in _CV2_FLIP]
    if bad or not directions:
        raise ValueError(f"direction must be among {sorted(_CV2_FLIP)}, got {direction!r}")
    ratios = flip_ratio if isinstance(flip_ratio, list) else [flip_ratio]
    if any(r is not None and not 0 <= r <= 1 for r in ratios):
        raise ValueError(f"flip_ratio must be in [0, 1], got {flip_ratio}")
    if isinstance(flip_ratio, list):
        if not isinstance(direction, list) or len(direction) != len(flip_ratio):
            raise ValueError(f"flip_ratio list {flip_ratio} needs a direction list of the same "
                             f"length, got {direction!r}")
        if sum(flip_ratio) > 1:
            raise ValueError(f"flip_ratio list must sum to at most 1, got {sum(flip_ratio)}")


class RandomFlipConfig(Schema):
    type: Literal["RandomFlip"] = "RandomFlip"
    # None: flip only as results["flip"] says (MultiScaleFlipAug sets it).
    flip_ratio: Maybe[Union[float, list[float]]] = None
    direction: Union[Direction, list[Direction]] = "horizontal"

    @model_validator(mode="after")
    def _check(self) -> RandomFlipConfig:
        check_flip_args(self.flip_ratio, self.direction)
        return self


@TRANSFORMS.register(RandomFlipConfig)
class RandomFlip:
    """Mirror the image and boxes with probability ``flip_ratio``.

    A float ratio with a list of directions splits the ratio evenly among them; a list of
    ratios gives each direction its own probability. ``results["flip"]`` (and
    ``"flip_direction"``), when already set, decide instead of the dice.
    """

    def __init__(self, *, flip_ratio: float | list[float] | None = None,
                 direction: str | list[str] = "horizontal") -> None:
        check_flip_args(flip_ratio, direction)
        directions = direction if isinstance(direction, list) else [direction]
        if flip_ratio is None:
            ratios = [0.0] * len(directions)
        elif isinstance(flip_ratio, list):
            ratios = list(flip_ratio)
        else:
            ratios = [flip_ratio / len(directions)] * len(directions)
        self.directions: list[Optional[str]] = [*directions, None]  # None: no flip
        self.probs = np.array([*ratios, max(0.0, 1.0 - sum(ratios))], dtype=np.float64)
        self.probs /= self.probs.sum()

    def __repr__(self) -> str:
        return f"RandomFlip(directions={self.directions[:-1]}, probs={self.probs[:-1].tolist()})"

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        if "flip" not in results:
            direction = self.directions[np.random.choice(len(self.directions), p=self.probs)]
            results["flip"] = direction is not None
            results["flip_direction"] = direction
        elif results.get("flip_direction") is None:
            results["flip_direction"] = self.directions[0] if results["flip"] else None
        if not results["flip"]:
            return results
        direction = results["flip_direction"]
        results["img"] = cv2.flip(results["img"], _CV2_FLIP[direction])
        hw = results["img_shape"][:2]
        for key in results.get("bbox_fields", []):
            results[key] = flip_boxes(results[key], hw, direction)
        for key in results.get("mask_fields", []):
            results[key] = results[key].flip(direction)
        return results


class PadConfig(Schema):
    type: Literal["Pad"] = "Pad"
    size: Maybe[ScalePair] = None  # (h, w)
    size_divisor: Maybe[PositiveInt] = None
    pad_to_square: bool = False
    # a number, or MMDetection's {img = 0, masks = 0}; img may be per channel: (114, 114, 114)
    pad_val: Union[float, dict[str, Union[float, tuple[float, float, float]]]] = 0.0

    @model_validator(mode="after")
    def _check(self) -> PadConfig:
        check_pad_args(self.size, self.size_divisor, self.pad_to_square)
        return self


def check_pad_args(size: Any, size_divisor: Any, pad_to_square: bool) -> None:
    """Raise ValueError unless exactly one padding mode is chosen."""
    chosen = {"size": size is not None, "size_divisor": size_divisor is not None,
              "pad_to_square": pad_to_square}
    modes = [name for name, on in chosen.items() if on]
    if len(modes) != 1:
        raise ValueError(f"Pad needs exactly one of size, size_divisor, pad_to_square; got "
                         f"{modes or 'none'}")


@TRANSFORMS.register(PadConfig)
class Pad:
    """Pad the image at the bottom and right to ``size`` (h, w), to multiples of
    ``size_divisor``, or to a square; boxes do not move, masks are padded with
    ``pad_val["masks"]`` (0 unless a dict says otherwise). Records ``pad_shape``."""

    def __init__(self, *, size: tuple[int, int] | None = None, size_divisor: int | None = None,
                 pad_to_square: bool = False, pad_val: float | dict[str, float] = 0.0) -> None:
        check_pad_args(size, size_divisor, pad_to_square)
        self.size = tuple(size) if size is not None else None
        self.size_divisor = size_divisor
        self.pad_to_square = pad_to_square
        img_val = pad_val.get("img", 0.0) if isinstance(pad_val, dict) else pad_val
        # a number, or one per channel (RTMDet's (114, 114, 114))
        self.pad_val = float(img_val) if np.ndim(img_val) == 0 else tuple(float(v) for v in img_val)
        self.mask_pad_val = int(pad_val.get("masks", 0) if isinstance(pad_val, dict) else 0)

    def __repr__(self) -> str:
        return (f"Pad(size={self.size}, size_divisor={self.size_divisor}, "
                f"pad_to_square={self.pad_to_square}, pad_val={self.pad_val})")

    def target_shape(self, h: int, w: int) -> tuple[int, int]:
        if self.pad_to_square:
            return max(h, w), max(h, w)
        if self.size is not None:
            return self.size
        d = self.size_divisor
        return -(-h // d) * d, -(-w // d) * d

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        img = results["img"]
        h, w = img.shape[:2]
        th, tw = self.target_shape(h, w)
        if th < h or tw < w:
            raise DataError(f"Pad size (h, w) = {(th, tw)} is smaller than the image {(h, w)}")
        padded = np.full((th, tw, *img.shape[2:]), self.pad_val, dtype=img.dtype)  # (th, tw, 3)
        padded[:h, :w] = img
        results["img"] = padded
        results["pad_shape"] = padded.shape
        results["pad_fixed_size"] = self.size
        results["pad_size_divisor"] = self.size_divisor
        for key in results.get("mask_fields", []):
            results[key] = results[key].pad((th, tw), self.mask_pad_val)
        return results
