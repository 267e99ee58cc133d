"""Preprocessing for inference: the config's test pipeline applied to image files or arrays.

N images, h_i x w_i an image as read, H x W the padded batch.

The pipeline is the config's ``data.test.pipeline`` (else ``data.val``'s), exactly what
``det test`` runs, so a model sees the same input in ``det predict`` as in evaluation: an
image file goes through every step, ``LoadImageFromFile`` included; an array (H, W, 3) BGR,
as OpenCV reads it, skips that first step and enters where it would have left. With a
``MultiScaleFlipAug`` the first view (first scale, unflipped) is used: no test-time
augmentation here. The samples are collated by :func:`detcli.data.collate.collate_images`
(zero padding at the bottom and right), so ``ImageBatch.scale_factors`` and ``ori_shapes``
map boxes back to each original image.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

from detcli.config.schema import Schema
from detcli.data.collate import collate_images
from detcli.data.transforms.compose import Compose
from detcli.errors import ConfigError, DataError
from detcli.structures.batch import ImageBatch

ImageInput = Union[str, os.PathLike, np.ndarray]
LOAD_STEP = "LoadImageFromFile"


def inference_pipeline(cfg: Any) -> list[Schema]:
    """The transform configs of ``cfg.data.test`` (else ``cfg.data.val``)."""
    for split in ("test", "val"):
        dataset = cfg.data.split(split)
        if dataset is not None and getattr(dataset, "pipeline", None):
            return list(dataset.pipeline)
    raise ConfigError("the config has no data.test or data.val pipeline to preprocess images with",
                      hint="add a [data.test] section with a test pipeline (see "
                           "presets/_base/datasets/)")


def inference_image_dir(cfg: Any) -> Path | None:
    """The image folder (``img_prefix``) of ``data.test`` (else ``data.val``), if any."""
    for split in ("test", "val"):
        dataset = cfg.data.split(split)
        prefix = getattr(dataset, "img_prefix", None) if dataset is not None else None
        if prefix:
            return Path(prefix)
    return None


class Preprocessor:
    """``__call__(images)``: files or BGR arrays -> one padded :class:`ImageBatch` (view 0)."""

    def __init__(self, pipeline: Sequence[Any]) -> None:
        steps = list(pipeline)
        if not steps or _step_type(steps[0]) != LOAD_STEP:
            raise ConfigError(f"the test pipeline must start with {LOAD_STEP}, but it starts "
                              f"with {_step_type(steps[0]) if steps else 'nothing'}")
        self.loader = Compose(steps[:1])
        self.transforms = Compose(steps[1:])
        load = self.loader.transforms[0]
        self.channel_order = getattr(load, "channel_order", "bgr")
        self.to_float32 = bool(getattr(load, "to_float32", False))

    @classmethod
    def from_config(cls, cfg: Any) -> Preprocessor:
        return cls(inference_pipeline(cfg))

    def __call__(self, images: Sequence[ImageInput]) -> ImageBatch:
        if not images:
            raise DataError("no images to preprocess")
        return collate_images([self.sample(image) for image in images])

    def sample(self, image: ImageInput) -> dict[str, Any]:
        """One image through the pipeline -> ``{"img": (3, h, w) tensor, "img_metas": {...}}``."""
        if isinstance(image, np.ndarray):
            out = self.transforms(self._array_results(image))
        else:
            path = os.fspath(image)
            results = {"img_info": {"filename": path, "file_name": os.path.basename(path)},
                       "img_prefix": None, "image_id": None}
            out = self.transforms(self.loader(results))
        if out is None:
            raise DataError("the test pipeline rejected the image; test pipelines must not drop "
                            "images (remove RandomCrop and similar steps from it)")
        return out["views"][0] if "views" in out else out

    def _array_results(self, image: np.ndarray) -> dict[str, Any]:
        """What LoadImageFromFile would have produced for an in-memory BGR image."""
        if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
            raise DataError(f"an image array must be (H, W, 3) BGR, got shape {image.shape}")
        if image.dtype != np.uint8 and not np.issubdtype(image.dtype, np.floating):
            raise DataError(f"an image array must be uint8 (or float) BGR, got {image.dtype}")
        img = np.ascontiguousarray(image[..., ::-1] if self.channel_order == "rgb" else image)
        if self.to_float32:
            img = img.astype(np.float32)
        return {"img": img, "img_shape": img.shape, "ori_shape": img.shape,
                "img_fields": ["img"], "filename": None, "ori_filename": None,
                "image_id": None, "img_info": {"filename": "<array>"}}


def _step_type(step: Any) -> str:
    if isinstance(step, dict):
        return str(step.get("type"))
    return str(getattr(step, "type", type(step).__name__))
