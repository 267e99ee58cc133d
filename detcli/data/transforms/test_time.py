"""Test-time augmentation: run an inner pipeline once per (scale, flip) view of an image.

V views = number of scales x (1 + number of flip directions when ``flip`` is on).

``MultiScaleFlipAug`` returns ``{"views": [sample_0, ..., sample_{V-1}]}``. Each sample is what
the inner pipeline produces (normally ``{"img": (3, H_v, W_v), "img_metas": {...}}``), and its
``img_metas`` carry that view's ``scale_factor``, ``flip`` and ``flip_direction``, so the TTA
merge maps each view's boxes back to the original image before merging. Views are ordered
scale-major: for each scale, the unflipped view first, then one per flip direction.
``detcli.data.collate.collate_views`` turns a batch of such samples into V image batches.
GT masks are not needed at test time: when a test pipeline loads them, each view's steps move
its own copy (mask structures are never changed in place) and Collect drops them unless asked.
"""

from __future__ import annotations

import logging
from typing import Any, Literal, Union

from pydantic import model_validator

from detcli.config.schema import Maybe, Schema
from detcli.data.transforms.compose import Compose, TransformSpec, image_file
from detcli.data.transforms.geometric import Direction, ScalePair, scale_list, check_flip_args
from detcli.errors import DataError
from detcli.registry import TRANSFORMS, TransformConfig

log = logging.getLogger(__name__)


class MultiScaleFlipAugConfig(Schema):
    type: Literal["MultiScaleFlipAug"] = "MultiScaleFlipAug"
    transforms: list[TransformConfig]
    img_scale: Maybe[Union[ScalePair, list[ScalePair]]] = None  # (w, h) pairs, as Resize
    scale_factor: Maybe[Union[float, list[float]]] = None  # or ratios of the input size
    flip: bool = False
    flip_direction: Union[Direction, list[Direction]] = "horizontal"

    @model_validator(mode="after")
    def _check(self) -> MultiScaleFlipAugConfig:
        check_tta_args(self.img_scale, self.scale_factor, self.flip_direction)
        return self


def check_tta_args(img_scale: Any, scale_factor: Any, flip_direction: Any) -> None:
    """Raise ValueError unless exactly one of img_scale / scale_factor is set."""
    if (img_scale is None) == (scale_factor is None):
        raise ValueError("MultiScaleFlipAug needs exactly one of img_scale and scale_factor, got "
                         f"img_scale={img_scale}, scale_factor={scale_factor}")
    factors = scale_factor if isinstance(scale_factor, list) else [scale_factor]
    if scale_factor is not None and any(f <= 0 for f in factors):
        raise ValueError(f"scale_factor must be positive, got {scale_factor}")
    check_flip_args(None, flip_direction)


@TRANSFORMS.register(MultiScaleFlipAugConfig)
class MultiScaleFlipAug:
    """For each scale and flip, copy the results, set ``scale`` (or a float ``scale_factor``),
    ``flip`` and ``flip_direction``, and run ``transforms`` (whose Resize and RandomFlip read
    those keys instead of drawing)."""

    def __init__(self, *, transforms: list[TransformSpec], img_scale: Any = None,
                 scale_factor: float | list[float] | None = None, flip: bool = False,
                 flip_direction: str | list[str] = "horizontal") -> None:
        check_tta_args(img_scale, scale_factor, flip_direction)
        self.transforms = Compose(transforms)
        if img_scale is not None:
            self.scale_key, self.scales = "scale", scale_list(img_scale)
        else:
            self.scale_key = "scale_factor"
            self.scales = [float(f) for f in (scale_factor if isinstance(scale_factor, list)
                                               else [scale_factor])]
        directions = flip_direction if isinstance(flip_direction, list) else [flip_direction]
        self.flip_args: list[tuple[bool, str | None]] = [(False, None)]
        if flip:
            self.flip_args += [(True, d) for d in directions]
            if "RandomFlip" not in self.transforms.names:
                log.warning("MultiScaleFlipAug has flip = true but no RandomFlip in its transforms; "
                            "the flipped views will not be flipped")

    def __repr__(self) -> str:
        return (f"MultiScaleFlipAug({self.scale_key}={self.scales}, flips={self.flip_args}, "
                f"transforms={self.transforms!r})")

    @property
    def num_views(self) -> int:
        return len(self.scales) * len(self.flip_args)

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        views = []
        for scale in self.scales:
            for flip, direction in self.flip_args:
                view = dict(results)  # shallow: transforms replace arrays, never edit them
                for fields in ("bbox_fields", "mask_fields"):  # steps may extend these lists
                    if fields in view:
                        view[fields] = list(view[fields])
                view[self.scale_key] = scale
                view["flip"] = flip
                view["flip_direction"] = direction
                out = self.transforms(view)
                if out is None:
                    raise DataError(f"a test-time transform rejected {image_file(results)} "
                                    f"(scale {scale}, flip {direction}); test pipelines must not "
                                    "drop images")
                views.append(out)
        return {"views": views}
