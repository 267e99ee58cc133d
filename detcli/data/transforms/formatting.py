"""The last pipeline steps: numpy to tensors, then keep only what the model and the collate need.

H, W: image height and width after padding; G GT boxes; I ignore boxes.

After ``DefaultFormatBundle`` and ``Collect(keys=[...])`` a training sample is::

    {"img": float32 Tensor (3, H, W), "gt_bboxes": float32 Tensor (G, 4),
     "gt_labels": int64 Tensor (G,), "gt_bboxes_ignore": float32 Tensor (I, 4),
     "img_metas": {"filename", "ori_filename", "ori_shape", "img_shape", "pad_shape",
                   "scale_factor", "flip", "flip_direction", "img_norm_cfg", "image_id"}}

(a test sample has only ``img`` and ``img_metas``). With ``LoadAnnotations(with_mask=True)``
and ``"gt_masks"`` among Collect's keys, the sample also holds ``"gt_masks"``: uint8 Tensor
(G, H, W) in {0, 1}, one mask per ``gt_bboxes`` row (polygons are rasterised here).
``detcli.data.collate`` batches these.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from detcli.config.schema import Schema
from detcli.errors import DataError
from detcli.registry import TRANSFORMS
from detcli.structures.masks import InstanceMasks

DEFAULT_META_KEYS = (
    "filename", "ori_filename", "ori_shape", "img_shape", "pad_shape", "scale_factor",
    "flip", "flip_direction", "img_norm_cfg", "image_id",
)
_GT_DTYPES = {"gt_bboxes": np.float32, "gt_bboxes_ignore": np.float32, "gt_labels": np.int64,
              "proposals": np.float32}


def image_to_tensor(img: np.ndarray) -> torch.Tensor:
    """(H, W, C) or (H, W) array -> (C, H, W) contiguous tensor of the same dtype."""
    if img.ndim == 2:
        img = img[..., None]  # (H, W, 1)
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))  # (C, H, W)


class DefaultFormatBundleConfig(Schema):
    type: Literal["DefaultFormatBundle"] = "DefaultFormatBundle"


@TRANSFORMS.register(DefaultFormatBundleConfig)
class DefaultFormatBundle:
    """``img`` -> float32 (3, H, W) tensor; ``gt_bboxes``, ``gt_labels``, ``gt_bboxes_ignore``
    (and ``proposals``) -> tensors of fixed dtypes; ``gt_masks`` -> uint8 (G, H, W) tensor
    (a DataError when its size is not the image's: a geometric step left it behind).

    Fills the meta keys a pipeline without Resize / Pad / Normalize / RandomFlip leaves unset:
    ``pad_shape`` = image shape, ``scale_factor`` = ones, ``img_norm_cfg`` = identity,
    ``flip`` = False, ``flip_direction`` = None.
    """

    def __init__(self) -> None:
        pass

    def __repr__(self) -> str:
        return "DefaultFormatBundle()"

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        if "img" in results:
            img = results["img"]
            results.setdefault("pad_shape", img.shape)
            results.setdefault("scale_factor", np.ones(4, dtype=np.float32))
            results.setdefault("img_norm_cfg", {"mean": np.zeros(3, np.float32),
                                                "std": np.ones(3, np.float32), "to_rgb": False})
            results["img"] = image_to_tensor(img).float()  # (3, H, W)
        results.setdefault("flip", False)
        results.setdefault("flip_direction", None)
        for key, dtype in _GT_DTYPES.items():
            if key in results:
                results[key] = torch.from_numpy(np.ascontiguousarray(results[key], dtype=dtype))
        if "gt_masks" in results:
            results["gt_masks"] = _mask_tensor(results["gt_masks"], results)
        return results


def _mask_tensor(masks: InstanceMasks, results: dict[str, Any]) -> torch.Tensor:
    """(G, H, W) uint8 of ``masks``, checked against the image's (H, W)."""
    img = results.get("img")
    hw = tuple(img.shape[-2:]) if img is not None else (masks.height, masks.width)
    if (masks.height, masks.width) != hw:
        raise DataError(f"gt_masks are {masks.height}x{masks.width} (h x w) but the image is "
                        f"{hw[0]}x{hw[1]}: a transform moved the image without its masks")
    return masks.to_tensor()  # (G, H, W) uint8


class ImageToTensorConfig(Schema):
    type: Literal["ImageToTensor"] = "ImageToTensor"
    keys: list[str]


@TRANSFORMS.register(ImageToTensorConfig)
class ImageToTensor:
    """Each of ``keys`` (H, W, C) -> (C, H, W) tensor, dtype kept (float32 after Normalize)."""

    def __init__(self, *, keys: list[str]) -> None:
        self.keys = list(keys)

    def __repr__(self) -> str:
        return f"ImageToTensor(keys={self.keys})"

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        for key in self.keys:
            results[key] = image_to_tensor(results[key])  # (C, H, W)
        return results


class CollectConfig(Schema):
    type: Literal["Collect"] = "Collect"
    keys: list[str]
    meta_keys: list[str] = Field(default_factory=lambda: list(DEFAULT_META_KEYS))


@TRANSFORMS.register(CollectConfig)
class Collect:
    """Keep ``keys`` and gather ``meta_keys`` into ``img_metas``; everything else is dropped.

    MMDetection's default meta keys plus ``image_id``. A missing key is a DataError listing the
    keys the results do have (usually a pipeline step is missing before Collect).
    """

    def __init__(self, *, keys: list[str], meta_keys: tuple[str, ...] | list[str] = DEFAULT_META_KEYS
                 ) -> None:
        self.keys = list(keys)
        self.meta_keys = list(meta_keys)

    def __repr__(self) -> str:
        return f"Collect(keys={self.keys}, meta_keys={self.meta_keys})"

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        missing = [k for k in (*self.keys, *self.meta_keys) if k not in results]
        if missing:
            raise DataError(
                f"Collect: the results have no {missing}; present keys: {sorted(results)}",
                hint="add the pipeline step that sets them (Resize, RandomFlip, Normalize, Pad) "
                     "before Collect, or drop them from Collect's keys/meta_keys",
            )
        data = {key: results[key] for key in self.keys}
        data["img_metas"] = {key: results[key] for key in self.meta_keys}
        return data
