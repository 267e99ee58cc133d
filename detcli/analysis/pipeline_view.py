"""Running a config's data pipeline for a picture: geometry and pixels, no tensors, no batching.

H, W: the network input (after resize and padding); h, w: the image after resize, before
padding; G GT boxes (and masks, when the pipeline loads them), I ignore boxes. Boxes are (x1, y1, x2, y2) in pixels of the image at the
stage the name says (``ori`` for the file as read, otherwise the network input).

``viz assign`` and ``viz dataset`` both need what the model would see: the image after Resize,
RandomFlip, RandomCrop, Normalize and Pad, and the GT boxes moved with it. The pipeline of the
config does exactly that, so it is reused as written except for three changes:

1. the formatting steps (``DefaultFormatBundle``, ``ImageToTensor``, ``Collect``) are dropped, so
   the results dict keeps ``gt_bboxes`` and the numpy image;
2. ``LoadAnnotations`` is put right after ``LoadImageFromFile`` when the pipeline has none (test
   pipelines), so the boxes travel through the same steps as the image;
3. of ``MultiScaleFlipAug``'s views, the first (first scale, not flipped) is taken.

Random steps draw from the global ``np.random`` and python ``random`` states (as in training);
:func:`run_pipeline` seeds them for the call and restores them afterwards, so a seed gives the
same picture. The results dict carries the dataset (``mix_source``), so a Mosaic or MixUp of
the pipeline mixes in other images of it, loaded by the pipeline's own loading steps.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from detcli.config.schema import Schema
from detcli.data.transforms.compose import Compose
from detcli.engine.seed import seeded_draws
from detcli.errors import DataError

log = logging.getLogger(__name__)

FORMAT_STEPS = ("DefaultFormatBundle", "ImageToTensor", "Collect")
TTA_STEP = "MultiScaleFlipAug"


@dataclass
class PipelineView:
    """One image as the network sees it, with its GT in network-input pixels."""

    image: np.ndarray  # (H, W, 3) uint8 BGR, de-normalised, padding included
    img_shape: tuple[int, int]  # (h, w) after resize, before padding
    pad_shape: tuple[int, int]  # (H, W)
    ori_shape: tuple[int, int]  # (h0, w0) of the file as read
    scale_factor: np.ndarray  # (4,) float32 (sx, sy, sx, sy): original -> network input
    flip: bool
    flip_direction: Optional[str]
    gt_boxes: np.ndarray  # (G, 4) float32, network-input pixels
    gt_labels: np.ndarray  # (G,) int64 in [0, K)
    ignore_boxes: np.ndarray  # (I, 4) float32, network-input pixels
    filename: str
    gt_masks: Optional[np.ndarray] = None  # (G, H, W) bool, network input; None: not loaded


def _step_type(step: Any) -> str:
    return step.type if isinstance(step, Schema) else str(step.get("type", ""))


def _as_dict(step: Any) -> dict[str, Any]:
    return step.model_dump() if isinstance(step, Schema) else dict(step)


def _without_formatting(pipeline: Sequence[Any]) -> list[dict[str, Any]]:
    """Change 1, into MultiScaleFlipAug's own transforms too."""
    steps: list[dict[str, Any]] = []
    for step in pipeline:
        kind = _step_type(step)
        if kind in FORMAT_STEPS:
            continue
        spec = _as_dict(step)
        if kind == TTA_STEP:
            spec["transforms"] = _without_formatting(spec["transforms"])
        steps.append(spec)
    return steps


def viewing_pipeline(pipeline: Sequence[Any], with_mask: bool = False) -> list[dict[str, Any]]:
    """The steps of ``pipeline`` (config models or dicts) changed as the module docstring says;
    ``with_mask``: its LoadAnnotations (the added one, or the pipeline's) loads masks too."""
    steps = _without_formatting(pipeline)
    kinds = [s["type"] for s in steps]
    if "LoadAnnotations" not in kinds:
        at = kinds.index("LoadImageFromFile") + 1 if "LoadImageFromFile" in kinds else 0
        steps.insert(at, {"type": "LoadAnnotations", "with_bbox": True, "with_label": True})
    if with_mask:
        steps = [{**s, "with_mask": True} if s["type"] == "LoadAnnotations" else s
                 for s in steps]
    return steps


def channel_order(pipeline: Sequence[Any]) -> str:
    """"bgr" or "rgb": the channel order ``LoadImageFromFile`` reads in (before Normalize)."""
    for step in pipeline:
        if _step_type(step) == "LoadImageFromFile":
            return str(_as_dict(step).get("channel_order", "bgr"))
    return "bgr"


def denormalize(img: np.ndarray, norm_cfg: Optional[dict[str, Any]], loaded_order: str) -> np.ndarray:
    """(H, W, 3) network input -> uint8 BGR for OpenCV: ``img * std + mean``, channels back."""
    out = img.astype(np.float32)
    order = loaded_order
    if norm_cfg is not None:
        out = out * np.asarray(norm_cfg["std"], np.float32) + np.asarray(norm_cfg["mean"], np.float32)
        if norm_cfg.get("to_rgb"):
            order = "rgb" if loaded_order == "bgr" else "bgr"
    if order == "rgb":
        out = out[..., ::-1]  # (H, W, 3) RGB -> BGR
    return np.ascontiguousarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))


def _first_view(results: dict[str, Any]) -> dict[str, Any]:
    views = results.get("views")
    if views is None:
        return results
    if len(views) > 1:
        log.info("the pipeline makes %d test-time views; showing the first (first scale, not flipped)",
                 len(views))
    return views[0]


def _boxes(results: dict[str, Any], key: str) -> np.ndarray:
    boxes = results.get(key)
    if boxes is None:
        return np.zeros((0, 4), np.float32)
    return np.asarray(boxes, np.float32).reshape(-1, 4)  # (B, 4)


def _masks(results: dict[str, Any]) -> Optional[np.ndarray]:
    """(G, H, W) bool of ``results["gt_masks"]`` (an InstanceMasks), None when not loaded."""
    masks = results.get("gt_masks")
    if masks is None:
        return None
    return masks.to_bitmap().masks.astype(bool)


def run_pipeline(
    pipeline: Sequence[Any],
    results: dict[str, Any],
    seed: Optional[int] = 0,
    with_mask: bool = False,
) -> PipelineView:
    """Run :func:`viewing_pipeline` of ``pipeline`` on a dataset-style ``results`` dict
    (``img_info``, ``ann_info`` in original-image pixels, ``img_prefix``) -> :class:`PipelineView`.

    ``seed`` seeds ``np.random``, ``random`` and torch for the call (None: leave them alone).
    A pipeline that rejects the image (RandomCrop left no box) raises DataError.
    """
    compose = Compose(viewing_pipeline(pipeline, with_mask))
    results = {"bbox_fields": [], "img_prefix": "", **results}
    with seeded_draws(seed) if seed is not None else contextlib.nullcontext():
        out = compose(results)
    if out is None:
        raise DataError(f"the pipeline rejected {results['img_info'].get('filename')} "
                        "(RandomCrop left no GT box)", hint="try another --seed")
    out = _first_view(out)
    img = out["img"]
    return PipelineView(
        image=denormalize(img, out.get("img_norm_cfg"), channel_order(pipeline)),
        img_shape=tuple(out.get("img_shape", img.shape)[:2]),
        pad_shape=tuple(img.shape[:2]),
        ori_shape=tuple(out.get("ori_shape", img.shape)[:2]),
        scale_factor=np.asarray(out.get("scale_factor", np.ones(4)), np.float32).reshape(4),
        flip=bool(out.get("flip", False)),
        flip_direction=out.get("flip_direction"),
        gt_boxes=_boxes(out, "gt_bboxes"),
        gt_labels=np.asarray(out.get("gt_labels", np.zeros(0)), np.int64).reshape(-1),
        ignore_boxes=_boxes(out, "gt_bboxes_ignore"),
        filename=str(out.get("filename", "")),
        gt_masks=_masks(out),
    )
