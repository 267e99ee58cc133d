"""RandomResize and RandomChoiceResize: MMCV 2.x's resizes to a random scale (RTMDet's
pipelines use the first, DETR's the second).

A scale is (w, h). ``scale`` and ``ratio_range`` choose it per image, from numpy's global
state:

* one scale and a ``ratio_range`` (lo, hi): r = lo + random() * (hi - lo), the scale
  (int(w * r), int(h * r));
* two scales and no ratio: w' drawn uniformly from the integers between the two widths, h'
  between the two heights (per dimension, MMCV 2.x's rule; det's ``Resize`` with
  ``multiscale_mode = "range"`` draws the long and short edges instead);
* one scale and no ratio: that scale.

The image is then resized as :class:`~detcli.data.transforms.geometric.Resize` does:
``keep_ratio`` fits it inside the scale (MMCV's rescale rule), else it takes the scale
exactly; boxes and masks follow, ``scale_factor`` records it.

``RandomChoiceResize(scales)`` picks one of its scales uniformly (``np.random.randint(S)`` for
S scales, MMCV's one draw) and records its index in ``scale_idx``. Both steps draw their own
scale even when an earlier step left ``results["scale"]``, so two of them in one pipeline (the
crop branch of DETR's RandomChoice) resize twice, as in MMCV; ``scale_factor`` is then the
last step's (from the image it was given), as MMCV's is.
"""

from __future__ import annotations

from typing import Any, Literal, Union

import numpy as np
from pydantic import PositiveInt, model_validator

from detcli.config.schema import Maybe, Schema
from detcli.data.transforms.geometric import Resize
from detcli.registry import TRANSFORMS

ScalePair = tuple[PositiveInt, PositiveInt]


def check_random_resize(scales: list[tuple[int, int]], ratio_range: Any) -> None:
    """ValueError for a scale / ratio_range MMCV's RandomResize would reject."""
    if ratio_range is not None:
        if len(scales) != 1:
            raise ValueError(f"ratio_range {ratio_range} needs one scale, got {scales}")
        if not 0 < ratio_range[0] <= ratio_range[1]:
            raise ValueError(f"ratio_range must be (min, max) with 0 < min <= max, "
                             f"got {ratio_range}")
    elif len(scales) > 2:
        raise ValueError(f"RandomResize takes one scale (with ratio_range) or two (a range), "
                         f"got {len(scales)}")


def _scales(scale: Any) -> list[tuple[int, int]]:
    if len(scale) == 2 and all(isinstance(v, (int, np.integer)) for v in scale):
        return [tuple(scale)]
    return [tuple(s) for s in scale]


class RandomResizeConfig(Schema):
    type: Literal["RandomResize"] = "RandomResize"
    scale: Union[ScalePair, list[ScalePair]]  # (w, h), or two of them
    ratio_range: Maybe[tuple[float, float]] = None
    keep_ratio: bool = False
    bbox_clip_border: bool = True
    interpolation: Literal["nearest", "bilinear", "bicubic", "area", "lanczos"] = "bilinear"

    @model_validator(mode="after")
    def _check(self) -> RandomResizeConfig:
        check_random_resize(_scales(self.scale), self.ratio_range)
        return self


@TRANSFORMS.register(RandomResizeConfig)
class RandomResize(Resize):
    """Resize to a scale drawn per image (module docstring)."""

    def __init__(self, *, scale: Any, ratio_range: tuple[float, float] | None = None,
                 keep_ratio: bool = False, bbox_clip_border: bool = True,
                 interpolation: str = "bilinear") -> None:
        super().__init__(img_scale=None, keep_ratio=keep_ratio, bbox_clip_border=bbox_clip_border,
                         interpolation=interpolation)
        self.scales = _scales(scale)
        check_random_resize(self.scales, ratio_range)
        self.random_ratio = tuple(ratio_range) if ratio_range is not None else None

    def __repr__(self) -> str:
        return (f"RandomResize(scale={self.scales}, ratio_range={self.random_ratio}, "
                f"keep_ratio={self.keep_ratio})")

    def choose_scale(self) -> tuple[tuple[int, int], int | None]:
        if self.random_ratio is not None:
            lo, hi = self.random_ratio
            ratio = np.random.random_sample() * (hi - lo) + lo
            w, h = self.scales[0]
            return (int(w * ratio), int(h * ratio)), None
        if len(self.scales) == 1:
            return self.scales[0], None
        (w0, h0), (w1, h1) = self.scales
        w = int(np.random.randint(min(w0, w1), max(w0, w1) + 1))
        h = int(np.random.randint(min(h0, h1), max(h0, h1) + 1))
        return (w, h), None

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        results.pop("scale", None)  # a scale an earlier step chose is not this one's
        results.pop("scale_idx", None)
        return super().__call__(results)


class RandomChoiceResizeConfig(Schema):
    type: Literal["RandomChoiceResize"] = "RandomChoiceResize"
    scales: Union[ScalePair, list[ScalePair]]  # (w, h) pairs; with keep_ratio only the edges matter
    keep_ratio: bool = False
    bbox_clip_border: bool = True
    interpolation: Literal["nearest", "bilinear", "bicubic", "area", "lanczos"] = "bilinear"


@TRANSFORMS.register(RandomChoiceResizeConfig)
class RandomChoiceResize(Resize):
    """Resize to one of ``scales``, drawn uniformly per image (module docstring)."""

    def __init__(self, *, scales: Any, keep_ratio: bool = False, bbox_clip_border: bool = True,
                 interpolation: str = "bilinear") -> None:
        super().__init__(img_scale=None, keep_ratio=keep_ratio, bbox_clip_border=bbox_clip_border,
                         interpolation=interpolation)
        self.scales = _scales(scales)

    def __repr__(self) -> str:
        return f"RandomChoiceResize(scales={self.scales}, keep_ratio={self.keep_ratio})"

    def choose_scale(self) -> tuple[tuple[int, int], int | None]:
        idx = int(np.random.randint(len(self.scales)))
        return self.scales[idx], idx

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        results.pop("scale", None)  # a scale an earlier step chose is not this one's
        results.pop("scale_idx", None)
        return super().__call__(results)
