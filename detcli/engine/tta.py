"""Test-time augmentation: map every view's boxes back to the original image, merge, NMS again.

N images per batch, V views (``MultiScaleFlipAug``: scales x flips), L levels, P_v candidates
per image of view v, P = sum_v P_v, M = ``test_cfg.max_per_img``.

Semantics are MMDetection 2.x's ``BBoxTestMixin.aug_test_bboxes`` for dense heads:

1. per view, the head's pre-NMS candidates: per level the ``nms_pre`` top (prior, class) scores,
   decoded and clipped to the view's image, kept where the score is above ``score_thr``
   (MMDetection: ``get_bboxes(..., rescale=False, with_nms=False)``);
2. each view's boxes are mapped back to the original image (``bbox_mapping_back``): un-flipped
   inside the view's ``img_shape`` (horizontal: x -> w - x, vertical: y -> h - y, diagonal:
   both), then divided by the view's ``scale_factor``;
3. the candidates of all views are concatenated per image (scores are not averaged) and one
   NMS with ``test_cfg.nms`` (class-aware unless ``class_agnostic``) keeps at most
   ``max_per_img`` per image.

Differences from MMDetection: the whole batch is merged at once (MMDetection takes one image);
``min_bbox_size`` drops candidates after step 2, in original pixels, as the head's own
``predict`` does. Step 1 is the detector's ``candidates`` (:class:`~detcli.models.protocols.
Detector`): a single-stage detector's are its dense head's ``candidates`` -- the same code
``predict`` and the ONNX graph run; a two-stage detector gives its post-NMS detections per
view, which are mapped back and NMS-ed the same way.

:func:`enable_tta` prepares a dataset config: a test pipeline whose ``MultiScaleFlipAug`` has
one scale and ``flip = false`` gets ``flip = true`` (otherwise TTA would change nothing).
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
from torch import Tensor

from detcli.config.schema import Schema
from detcli.data.transforms.geometric import scale_list
from detcli.data.transforms.test_time import MultiScaleFlipAugConfig
from detcli.errors import ConfigError, DetError
from detcli.models.dense_heads.dense_predict import size_ok
from detcli.models.introspect import detection_test_cfg
from detcli.models.protocols import Detector
from detcli.structures.batch import ImageBatch
from detcli.structures.dense import Candidates
from detcli.structures.detections import Detections
from detcli.task.postprocess import nms_to_batch

log = logging.getLogger(__name__)

FLIPS_X = ("horizontal", "diagonal")
FLIPS_Y = ("vertical", "diagonal")


def flip_directions(images: ImageBatch) -> list[str | None]:
    """Each image's flip direction from its metas; None where it is not flipped."""
    metas = images.metas or [{} for _ in range(len(images))]
    return [(m.get("flip_direction") or "horizontal") if m.get("flip") else None for m in metas]


def unflip_boxes(boxes: Tensor, img_shapes: Tensor, directions: Sequence[str | None]) -> Tensor:
    """Undo each image's flip: boxes (N, P, 4) inside images of (h, w) ``img_shapes`` (N, 2),
    ``directions`` N of "horizontal" / "vertical" / "diagonal" / None. The inverse of
    ``RandomFlip``'s box flip (a flip is its own inverse): x1, x2 -> w - x2, w - x1."""
    unknown = sorted({d for d in directions if d is not None} - {*FLIPS_X, *FLIPS_Y})
    if unknown:
        raise DetError(f"unknown flip_direction {unknown[0]!r} in img_metas; expected one of "
                       "horizontal, vertical, diagonal")
    device = boxes.device
    flip_x = torch.tensor([d in FLIPS_X for d in directions], device=device)[:, None]  # (N, 1)
    flip_y = torch.tensor([d in FLIPS_Y for d in directions], device=device)[:, None]  # (N, 1)
    h = img_shapes[:, 0:1].to(boxes)  # (N, 1)
    w = img_shapes[:, 1:2].to(boxes)  # (N, 1)
    x1, y1, x2, y2 = boxes.unbind(-1)  # (N, P) each
    x1, x2 = torch.where(flip_x, w - x2, x1), torch.where(flip_x, w - x1, x2)
    y1, y2 = torch.where(flip_y, h - y2, y1), torch.where(flip_y, h - y1, y2)
    return torch.stack([x1, y1, x2, y2], dim=-1)  # (N, P, 4)


def map_back(boxes: Tensor, images: ImageBatch) -> Tensor:
    """Boxes (N, P, 4) in a view's network-input pixels -> original-image pixels: un-flip in
    the view's ``img_shape``, then divide by its ``scale_factor`` (``bbox_mapping_back``)."""
    img_shapes = images.img_shapes.to(boxes.device, torch.float32)  # (N, 2)
    unflipped = unflip_boxes(boxes, img_shapes, flip_directions(images))  # (N, P, 4)
    return unflipped / images.scale_factors.to(unflipped)[:, None, :]  # (N, P, 4)


def view_candidates(model: Detector, images: ImageBatch) -> Candidates:
    """One view's candidates (see the module docstring, step 1)."""
    return model.candidates(images)


def merge_views(model: Detector, views: Sequence[ImageBatch]) -> list[Detections]:
    """TTA detections of N images from their V view batches, boxes in original pixels."""
    if not views:
        raise DetError("test-time augmentation got no views")
    cfg = detection_test_cfg(model)
    if "nms" not in type(cfg).model_fields:
        raise ConfigError(
            f"test-time augmentation merges the views' boxes with the model's NMS, but "
            f"{type(model).__name__}'s test_cfg ({type(cfg).__name__}) has none: a query-based "
            f"detector keeps its top-k queries without NMS, so --tta does not apply to it",
            hint="run det test without --tta")
    boxes, scores, labels, valid = [], [], [], []
    for images in views:
        cand = view_candidates(model, images)
        boxes.append(map_back(cand.boxes.float(), images))
        scores.append(cand.scores)
        labels.append(cand.labels)
        valid.append(cand.valid)
    boxes_all = torch.cat(boxes, dim=1)  # (N, P, 4)
    keep = torch.cat(valid, dim=1) & size_ok(boxes_all, cfg.min_bbox_size)  # (N, P)
    merged = nms_to_batch(boxes_all, torch.cat(scores, dim=1), torch.cat(labels, dim=1), keep, cfg)
    return merged.unbind()


def _num_scales(step: MultiScaleFlipAugConfig) -> int:
    if step.img_scale is not None:
        return len(scale_list(step.img_scale) or [])
    return len(step.scale_factor) if isinstance(step.scale_factor, list) else 1


def _tta_step(pipeline: list[Schema]) -> int:
    found = [i for i, t in enumerate(pipeline) if isinstance(t, MultiScaleFlipAugConfig)]
    if not found:
        raise ConfigError(
            "--tta needs a MultiScaleFlipAug step in the test pipeline; it has "
            f"{[getattr(t, 'type', '?') for t in pipeline]}",
            hint="wrap the test transforms in { type = \"MultiScaleFlipAug\", img_scale = [...], "
                 "flip = true, transforms = [...] }")
    return found[0]


def enable_tta(dataset_cfg: Schema, where: str = "data.test") -> tuple[Schema, str | None]:
    """``dataset_cfg`` ready for TTA, and a note saying what was changed (None: nothing).

    A ``MultiScaleFlipAug`` with one scale and ``flip = false`` gets ``flip = true``; one whose
    views would not be flipped (no ``RandomFlip`` inside) is a ConfigError.
    """
    pipeline = list(dataset_cfg.pipeline)  # type: ignore[attr-defined]
    index = _tta_step(pipeline)
    step: MultiScaleFlipAugConfig = pipeline[index]  # type: ignore[assignment]
    note = None
    if _num_scales(step) == 1 and not step.flip:
        step = step.model_copy(update={"flip": True})
        note = (f"{where}.pipeline: MultiScaleFlipAug has one scale and flip = false; --tta "
                f"adds flip = true ({step.flip_direction}) so there is something to merge")
    if step.flip and not any(getattr(t, "type", None) == "RandomFlip" for t in step.transforms):
        raise ConfigError(f"{where}.pipeline: MultiScaleFlipAug has flip = true but no RandomFlip "
                          "in its transforms, so its flipped views would not be flipped",
                          hint="add { type = \"RandomFlip\" } after Resize in its transforms")
    pipeline[index] = step
    return dataset_cfg.model_copy(update={"pipeline": pipeline}), note


def num_views(dataset_cfg: Schema) -> int:
    """Views the dataset's MultiScaleFlipAug makes per image (1 without one)."""
    for step in getattr(dataset_cfg, "pipeline", []):
        if isinstance(step, MultiScaleFlipAugConfig):
            flips = len(step.flip_direction) if isinstance(step.flip_direction, list) else 1
            return _num_scales(step) * (1 + (flips if step.flip else 0))
    return 1
