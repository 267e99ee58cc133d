"""Mixed-image augmentation: Mosaic, MixUp and their cached forms (MMDetection 3.3's).

(w, h) = ``img_scale`` (MMDetection's order: width first); G GT boxes of a sample; every key
of ``bbox_fields`` (``gt_bboxes``, ``gt_bboxes_ignore``) moves the same way and
``gt_labels`` follows ``gt_bboxes``. Boxes are (x1, y1, x2, y2) pixels.

* :class:`Mosaic`: the sample and three images drawn from the dataset, each resized to fit
  (w, h) with its aspect ratio, pasted around a centre (cx, cy) drawn from
  ``center_ratio_range`` x (w, h) on a (2h, 2w) canvas of ``pad_val``: top-left, top-right,
  bottom-left, bottom-right. A patch's boxes are scaled with it and shifted by where it was
  pasted, *not* cut to its quadrant (MMDetection's rule), then clipped to the canvas
  (``bbox_clip_border``) and dropped unless inside it (x1 < 2w, y1 < 2h, x2 > 0, y2 > 0).
* :class:`MixUp`: an image drawn from the dataset (one with boxes, ``max_iters`` tries) is
  resized to fit (w, h), pasted top-left on a (h, w) canvas of ``pad_val``, scaled by a
  jitter from ``ratio_range``, mirrored with probability 1 - ``flip_ratio``, padded to cover
  the sample and cut at a random offset to its size; the two images are averaged 0.5 / 0.5
  and the boxes of both kept (the other's clipped, both dropped unless inside).
* :class:`CachedMosaic` / :class:`CachedMixUp`: the same, with the other images taken from a
  cache of the last ``max_cached_images`` samples this process saw at that step (when full,
  a random entry or the oldest leaves). No image is loaded for them, so they are cheap; the
  cache lives in each loader worker (and the main process), so what a sample is mixed with
  depends on the samples its process loaded before it: repeatable for the same seed and
  ``workers_per_gpu`` from the start of a run, but not across worker counts, nor after a
  resume inside an epoch (the cache starts empty). :class:`Mosaic` and :class:`MixUp` draw
  from the dataset and have neither limit (:mod:`detcli.data.transforms.mixing`).

Random draws use numpy's global state in MMDetection's order (MMDetection's ``random`` there is
``numpy.random``: ``randint``'s upper bound is exclusive, so a cached transform never draws the
cache's newest entry, the sample itself, and never pops it). Instance masks are refused
(:func:`~detcli.data.transforms.mixing.refuse_masks`).
"""

from __future__ import annotations

import copy
from typing import Any, Literal, Sequence, Union

import cv2
import numpy as np
from pydantic import Field, PositiveInt, model_validator

from detcli.config.schema import Schema
from detcli.data.transforms.mixing import MixDraws, MixImageTransform, refuse_masks
from detcli.registry import TRANSFORMS

ScaleWH = tuple[PositiveInt, PositiveInt]
PadValue = Union[float, tuple[float, float, float]]
LOCATIONS = ("top_left", "top_right", "bottom_left", "bottom_right")


def _check_range(name: str, lo_hi: tuple[float, float], positive: bool = True) -> None:
    lo, hi = lo_hi
    if lo > hi or (positive and lo <= 0):
        raise ValueError(f"{name} must be (min, max) with {'0 < ' if positive else ''}min <= max, "
                         f"got {lo_hi}")


def bbox_keys(results: dict[str, Any]) -> list[str]:
    """The box keys of a sample (``bbox_fields``; ``gt_bboxes`` when it has no list)."""
    return list(results.get("bbox_fields") or ["gt_bboxes"])


def inside(boxes: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(G,) bool: MMDetection's ``is_inside``: some of the box lies inside an (h, w) image."""
    h, w = hw
    return (boxes[:, 0] < w) & (boxes[:, 1] < h) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)


def clip(boxes: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    h, w = hw
    return np.clip(boxes, 0, np.array([w, h, w, h], dtype=boxes.dtype))


def keep_boxes(results: dict[str, Any], key: str, keep: np.ndarray) -> None:
    """Keep the boxes ``keep`` of ``results[key]`` (and their labels for ``gt_bboxes``)."""
    results[key] = results[key][keep]
    if key == "gt_bboxes" and "gt_labels" in results:
        results["gt_labels"] = results["gt_labels"][keep]


# -- Mosaic -----------------------------------------------------------------------------------

def mosaic_coords(loc: str, center: tuple[int, int], patch_wh: tuple[int, int],
                  img_scale: tuple[int, int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(paste box on the canvas, crop box of the patch), both (x1, y1, x2, y2), for a
    ``patch_wh`` patch at ``loc`` around ``center`` on the (2h, 2w) canvas."""
    cx, cy = center
    pw, ph = patch_wh
    w2, h2 = 2 * img_scale[0], 2 * img_scale[1]
    if loc == "top_left":
        x1, y1, x2, y2 = max(cx - pw, 0), max(cy - ph, 0), cx, cy
        crop = (pw - (x2 - x1), ph - (y2 - y1), pw, ph)
    elif loc == "top_right":
        x1, y1, x2, y2 = cx, max(cy - ph, 0), min(cx + pw, w2), cy
        crop = (0, ph - (y2 - y1), min(pw, x2 - x1), ph)
    elif loc == "bottom_left":
        x1, y1, x2, y2 = max(cx - pw, 0), cy, cx, min(h2, cy + ph)
        crop = (pw - (x2 - x1), 0, pw, min(y2 - y1, ph))
    elif loc == "bottom_right":
        x1, y1, x2, y2 = cx, cy, min(cx + pw, w2), min(h2, cy + ph)
        crop = (0, 0, min(pw, x2 - x1), min(y2 - y1, ph))
    else:
        raise ValueError(f"mosaic location must be one of {LOCATIONS}, got {loc!r}")
    return (x1, y1, x2, y2), crop


def combine_mosaic(results: dict[str, Any], patches: Sequence[dict[str, Any]],
                   center: tuple[int, int], img_scale: tuple[int, int], pad_val: PadValue,
                   bbox_clip_border: bool = True) -> dict[str, Any]:
    """``results`` becomes the mosaic of the four ``patches`` (results first, top-left)."""
    w, h = img_scale
    img0 = patches[0]["img"]
    canvas = np.full((2 * h, 2 * w, *img0.shape[2:]), pad_val, dtype=img0.dtype)  # (2h, 2w, 3)
    keys = bbox_keys(results)
    boxes: dict[str, list[np.ndarray]] = {key: [] for key in keys}
    labels = []
    for loc, patch in zip(LOCATIONS, patches):
        img = patch["img"]
        h_i, w_i = img.shape[:2]
        ratio = min(h / h_i, w / w_i)
        img = cv2.resize(img, (int(w_i * ratio), int(h_i * ratio)), interpolation=cv2.INTER_LINEAR)
        (px1, py1, px2, py2), (cx1, cy1, cx2, cy2) = mosaic_coords(
            loc, center, (img.shape[1], img.shape[0]), img_scale)
        canvas[py1:py2, px1:px2] = img[cy1:cy2, cx1:cx2]
        shift = np.array([px1 - cx1, py1 - cy1] * 2, dtype=np.float32)  # (4,)
        for key in keys:
            moved = np.asarray(patch.get(key, np.zeros((0, 4))), np.float32).reshape(-1, 4)
            boxes[key].append(moved * np.float32(ratio) + shift)  # (G_i, 4)
        labels.append(np.asarray(patch.get("gt_labels", np.zeros(0)), np.int64).reshape(-1))
    results["gt_labels"] = np.concatenate(labels)
    for key in keys:
        merged = np.concatenate(boxes[key])  # (G, 4)
        if bbox_clip_border:
            merged = clip(merged, (2 * h, 2 * w))
        results[key] = merged
        keep_boxes(results, key, inside(merged, (2 * h, 2 * w)))
    results["img"] = canvas
    results["img_shape"] = canvas.shape
    results["pad_shape"] = canvas.shape
    return results


class MosaicConfig(Schema):
    type: Literal["Mosaic"] = "Mosaic"
    img_scale: ScaleWH = (640, 640)  # (w, h) of one quadrant; the mosaic is (2h, 2w)
    center_ratio_range: tuple[float, float] = (0.5, 1.5)
    bbox_clip_border: bool = True
    pad_val: PadValue = 114.0
    prob: float = Field(1.0, ge=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> MosaicConfig:
        _check_range("center_ratio_range", self.center_ratio_range)
        return self


@TRANSFORMS.register(MosaicConfig)
class Mosaic(MixImageTransform):
    """Four images in one (module docstring); the three others drawn from the dataset."""

    def __init__(self, *, img_scale: tuple[int, int] = (640, 640),
                 center_ratio_range: tuple[float, float] = (0.5, 1.5),
                 bbox_clip_border: bool = True, pad_val: PadValue = 114.0,
                 prob: float = 1.0) -> None:
        self.img_scale = tuple(img_scale)
        self.center_ratio_range = tuple(center_ratio_range)
        self.bbox_clip_border = bbox_clip_border
        self.pad_val = pad_val
        self.prob = prob

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(img_scale={self.img_scale}, "
                f"center_ratio_range={self.center_ratio_range}, pad_val={self.pad_val}, "
                f"prob={self.prob})")

    def draw_center(self) -> tuple[int, int]:
        return (int(np.random.uniform(*self.center_ratio_range) * self.img_scale[0]),
                int(np.random.uniform(*self.center_ratio_range) * self.img_scale[1]))

    def mix(self, results: dict[str, Any], draws: MixDraws) -> dict[str, Any]:
        refuse_masks(results, type(self).__name__)
        if np.random.uniform(0, 1) > self.prob:
            return results
        others = [draws.load(draws.draw_index()) for _ in range(3)]
        center = self.draw_center()
        return combine_mosaic(results, [results, *others], center, self.img_scale,
                              self.pad_val, self.bbox_clip_border)


class CachedMosaicConfig(MosaicConfig):
    type: Literal["CachedMosaic"] = "CachedMosaic"  # type: ignore[assignment]
    max_cached_images: int = Field(40, ge=4)
    random_pop: bool = True


@TRANSFORMS.register(CachedMosaicConfig)
class CachedMosaic:
    """Mosaic with the three other images from this process's cache (module docstring)."""

    def __init__(self, *, img_scale: tuple[int, int] = (640, 640),
                 center_ratio_range: tuple[float, float] = (0.5, 1.5),
                 bbox_clip_border: bool = True, pad_val: PadValue = 114.0, prob: float = 1.0,
                 max_cached_images: int = 40, random_pop: bool = True) -> None:
        self.mosaic = Mosaic(img_scale=img_scale, center_ratio_range=center_ratio_range,
                             bbox_clip_border=bbox_clip_border, pad_val=pad_val, prob=prob)
        self.cache = SampleCache(max_cached_images, random_pop)

    def __repr__(self) -> str:
        return f"CachedMosaic({self.mosaic!r}, {self.cache!r})"

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        refuse_masks(results, "CachedMosaic")
        self.cache.add(results)
        if len(self.cache) <= 4 or np.random.uniform(0, 1) > self.mosaic.prob:
            return results
        others = [self.cache.copy_of(int(np.random.randint(0, len(self.cache) - 1)))
                  for _ in range(3)]
        center = self.mosaic.draw_center()
        return combine_mosaic(results, [results, *others], center,
                              self.mosaic.img_scale, self.mosaic.pad_val,
                              self.mosaic.bbox_clip_border)


class SampleCache:
    """The last ``max_cached`` samples (deep copies) a cached transform saw in this process."""

    def __init__(self, max_cached: int, random_pop: bool) -> None:
        self.max_cached = max_cached
        self.random_pop = random_pop
        self.items: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return f"SampleCache(max_cached={self.max_cached}, random_pop={self.random_pop})"

    def __getstate__(self) -> dict[str, Any]:  # a worker starts with an empty cache
        return {"max_cached": self.max_cached, "random_pop": self.random_pop, "items": []}

    def add(self, results: dict[str, Any]) -> None:
        self.items.append(copy.deepcopy(results))
        if len(self.items) > self.max_cached:
            self.items.pop(int(np.random.randint(0, len(self.items) - 1)) if self.random_pop else 0)

    def copy_of(self, index: int) -> dict[str, Any]:
        return copy.deepcopy(self.items[index])


# -- MixUp ------------------------------------------------------------------------------------

def mix_pair(results: dict[str, Any], other: dict[str, Any], img_scale: tuple[int, int],
             ratio_range: tuple[float, float], flip_ratio: float, pad_val: PadValue,
             bbox_clip_border: bool = True) -> dict[str, Any]:
    """``results`` averaged with ``other`` (module docstring); draws the jitter, the flip and
    the offsets from numpy in that order."""
    w, h = img_scale
    jitter = np.random.uniform(*ratio_range)
    flip = np.random.uniform(0, 1) > flip_ratio
    other_img = other["img"]
    fill = np.asarray(pad_val, np.float64)  # float64, as MMDetection's np.ones(...) * pad_val
    canvas = np.ones((h, w, *other_img.shape[2:]), dtype=other_img.dtype) * fill  # (h, w, 3)
    ratio = min(h / other_img.shape[0], w / other_img.shape[1])
    size = (int(other_img.shape[1] * ratio), int(other_img.shape[0] * ratio))
    small = cv2.resize(other_img, size, interpolation=cv2.INTER_LINEAR)
    canvas[:small.shape[0], :small.shape[1]] = small
    ratio *= jitter
    canvas = cv2.resize(canvas, (int(canvas.shape[1] * jitter), int(canvas.shape[0] * jitter)),
                        interpolation=cv2.INTER_LINEAR)  # (h', w', 3) float64
    if flip:
        canvas = canvas[:, ::-1]
    img = results["img"]
    oh, ow = canvas.shape[:2]
    th, tw = img.shape[:2]
    padded = (np.ones((max(oh, th), max(ow, tw), 3)) * fill).astype(np.uint8)
    padded[:oh, :ow] = canvas
    y_off = int(np.random.randint(0, padded.shape[0] - th)) if padded.shape[0] > th else 0
    x_off = int(np.random.randint(0, padded.shape[1] - tw)) if padded.shape[1] > tw else 0
    cut = padded[y_off:y_off + th, x_off:x_off + tw]  # (th, tw, 3)
    shift = np.array([x_off, y_off] * 2, dtype=np.float32)
    for key in bbox_keys(results):
        boxes = np.asarray(other.get(key, np.zeros((0, 4))), np.float32).reshape(-1, 4)
        boxes = boxes * np.float32(ratio)  # (G', 4)
        if bbox_clip_border:
            boxes = clip(boxes, (oh, ow))
        if flip:
            boxes = np.stack([ow - boxes[:, 2], boxes[:, 1], ow - boxes[:, 0], boxes[:, 3]], axis=1)
        boxes = boxes - shift
        if bbox_clip_border:
            boxes = clip(boxes, (th, tw))
        own = np.asarray(results.get(key, np.zeros((0, 4))), np.float32).reshape(-1, 4)
        results[key] = np.concatenate([own, boxes]).astype(np.float32)
        if key == "gt_bboxes":
            results["gt_labels"] = np.concatenate([
                np.asarray(results.get("gt_labels", np.zeros(0)), np.int64).reshape(-1),
                np.asarray(other.get("gt_labels", np.zeros(0)), np.int64).reshape(-1)])
        keep_boxes(results, key, inside(results[key], (th, tw)))
    mixed = 0.5 * img.astype(np.float32) + 0.5 * cut.astype(np.float32)
    results["img"] = mixed.astype(np.uint8)
    results["img_shape"] = results["img"].shape
    return results


def num_boxes(results: dict[str, Any]) -> int:
    return int(np.asarray(results.get("gt_bboxes", np.zeros((0, 4)))).reshape(-1, 4).shape[0])


class MixUpConfig(Schema):
    type: Literal["MixUp"] = "MixUp"
    img_scale: ScaleWH = (640, 640)  # (w, h)
    ratio_range: tuple[float, float] = (0.5, 1.5)
    flip_ratio: float = Field(0.5, ge=0, le=1)
    pad_val: PadValue = 114.0
    max_iters: int = Field(15, ge=1)
    bbox_clip_border: bool = True

    @model_validator(mode="after")
    def _check(self) -> MixUpConfig:
        _check_range("ratio_range", self.ratio_range)
        return self


@TRANSFORMS.register(MixUpConfig)
class MixUp(MixImageTransform):
    """The sample averaged with an image drawn from the dataset (module docstring)."""

    def __init__(self, *, img_scale: tuple[int, int] = (640, 640),
                 ratio_range: tuple[float, float] = (0.5, 1.5), flip_ratio: float = 0.5,
                 pad_val: PadValue = 114.0, max_iters: int = 15,
                 bbox_clip_border: bool = True) -> None:
        self.img_scale = tuple(img_scale)
        self.ratio_range = tuple(ratio_range)
        self.flip_ratio = flip_ratio
        self.pad_val = pad_val
        self.max_iters = max_iters
        self.bbox_clip_border = bbox_clip_border

    def __repr__(self) -> str:
        return (f"MixUp(img_scale={self.img_scale}, ratio_range={self.ratio_range}, "
                f"flip_ratio={self.flip_ratio}, pad_val={self.pad_val}, "
                f"max_iters={self.max_iters})")

    def mix(self, results: dict[str, Any], draws: MixDraws) -> dict[str, Any]:
        refuse_masks(results, "MixUp")
        other = draws.load(draws.draw_index())
        for _ in range(self.max_iters - 1):
            if num_boxes(other):
                break
            other = draws.load(draws.draw_index())
        if not num_boxes(other):
            return results
        return mix_pair(results, other, self.img_scale, self.ratio_range, self.flip_ratio,
                        self.pad_val, self.bbox_clip_border)


class CachedMixUpConfig(MixUpConfig):
    type: Literal["CachedMixUp"] = "CachedMixUp"  # type: ignore[assignment]
    max_cached_images: int = Field(20, ge=2)
    random_pop: bool = True
    prob: float = Field(1.0, ge=0, le=1)


@TRANSFORMS.register(CachedMixUpConfig)
class CachedMixUp:
    """MixUp with the other image from this process's cache (module docstring)."""

    def __init__(self, *, img_scale: tuple[int, int] = (640, 640),
                 ratio_range: tuple[float, float] = (0.5, 1.5), flip_ratio: float = 0.5,
                 pad_val: PadValue = 114.0, max_iters: int = 15, bbox_clip_border: bool = True,
                 max_cached_images: int = 20, random_pop: bool = True, prob: float = 1.0) -> None:
        self.mixup = MixUp(img_scale=img_scale, ratio_range=ratio_range, flip_ratio=flip_ratio,
                           pad_val=pad_val, max_iters=max_iters, bbox_clip_border=bbox_clip_border)
        self.cache = SampleCache(max_cached_images, random_pop)
        self.prob = prob

    def __repr__(self) -> str:
        return f"CachedMixUp({self.mixup!r}, {self.cache!r}, prob={self.prob})"

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        refuse_masks(results, "CachedMixUp")
        self.cache.add(results)
        if len(self.cache) <= 1 or np.random.uniform(0, 1) > self.prob:
            return results
        index = int(np.random.randint(0, len(self.cache) - 1))
        for _ in range(self.mixup.max_iters - 1):
            if num_boxes(self.cache.items[index]):
                break
            index = int(np.random.randint(0, len(self.cache) - 1))
        other = self.cache.copy_of(index)
        if not num_boxes(other):
            return results
        m = self.mixup
        return mix_pair(results, other, m.img_scale, m.ratio_range, m.flip_ratio, m.pad_val,
                        m.bbox_clip_border)
