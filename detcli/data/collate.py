"""Batching pipeline samples into what the model takes: an ImageBatch and padded DetTargets.

N images in the batch, H and W the batch's largest image height and width (after each
image's own Pad), G the largest GT count, I the largest ignore-box count, V test-time views.

Images are copied into an (N, 3, H, W) float32 tensor of zeros at the top-left corner: the
padding value of normalised images is 0, the same as ``Pad(pad_val=0)`` after ``Normalize``.
GT is padded by :meth:`DetTargets.from_lists` (label -1 on empty slots); when the samples carry
``gt_masks`` ((G_i, h_i, w_i) uint8 tensors after ``DefaultFormatBundle``) they become
``DetTargets.masks`` (N, G, H, W), aligned with the box slots and padded with zeros to the
images' (H, W). Each image's
``img_metas`` is kept in ``ImageBatch.metas`` with ``batch_input_shape`` = (H, W) added.
``img_shapes`` and ``pad_shapes`` become (N, 2) int64 tensors here, once per batch (in the
loader's workers), so the train step never builds them from Python lists.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from detcli.errors import DataError
from detcli.structures.batch import DetTargets, ImageBatch


def _hw(shape: Any, what: str, meta: dict[str, Any]) -> tuple[int, int]:
    if shape is None or len(shape) < 2:
        raise DataError(f"img_metas of {meta.get('filename', '<unknown image>')} has no valid "
                        f"{what} (got {shape!r})")
    return int(shape[0]), int(shape[1])


def _scale_factor(meta: dict[str, Any]) -> np.ndarray:
    """The (4,) float32 (sx, sy, sx, sy) of one image; a scalar is broadcast."""
    factor = np.asarray(meta.get("scale_factor", 1.0), dtype=np.float32).reshape(-1)
    return np.broadcast_to(factor, (4,)) if factor.size == 1 else factor


def collate_images(samples: list[dict[str, Any]]) -> ImageBatch:
    """Pad the samples' (3, h_i, w_i) images into one (N, 3, H, W) float32 ImageBatch."""
    images = [s["img"] for s in samples]
    metas = [dict(s.get("img_metas", {})) for s in samples]
    h = max(img.shape[-2] for img in images)
    w = max(img.shape[-1] for img in images)
    # numpy, single-threaded: torch's intra-op threads fight the decoders' on small copies.
    padded = np.zeros((len(images), 3, h, w), dtype=np.float32)  # (N, 3, H, W)
    for i, img in enumerate(images):
        if img.ndim != 3 or img.shape[0] != 3:
            raise DataError(f"{metas[i].get('filename', f'sample {i}')}: expected an image tensor "
                            f"(3, H, W), got shape {tuple(img.shape)}",
                            hint="end the pipeline with DefaultFormatBundle (or ImageToTensor) "
                                 "and Collect")
        padded[i, :, : img.shape[1], : img.shape[2]] = np.asarray(img)
    tensor = torch.from_numpy(padded)
    for meta in metas:
        meta["batch_input_shape"] = (h, w)
    # Made here, once per batch, and moved with the images: the heads read them on the device.
    img_shapes = torch.tensor([_hw(m.get("img_shape"), "img_shape", m) for m in metas],
                              dtype=torch.long)  # (N, 2)
    ori_shapes = [_hw(m.get("ori_shape"), "ori_shape", m) for m in metas]
    factors = torch.from_numpy(np.stack([_scale_factor(m) for m in metas]))  # (N, 4)
    return ImageBatch(tensor=tensor, img_shapes=img_shapes, ori_shapes=ori_shapes,
                      scale_factors=factors, metas=metas)  # pad_shapes: each meta's pad_shape


def collate_targets(samples: list[dict[str, Any]],
                    pad_shape: tuple[int, int] | None = None) -> DetTargets | None:
    """Pad the samples' GT into DetTargets; None when no sample carries ``gt_bboxes``.

    ``gt_masks`` (G_i, h_i, w_i), when the samples have them, are padded to ``pad_shape``
    (the batch's (H, W); default: their largest h and w) as ``DetTargets.masks``.
    """
    with_gt = ["gt_bboxes" in s for s in samples]
    if not any(with_gt):
        return None
    if not all(with_gt):
        missing = [s.get("img_metas", {}).get("filename", i) for i, s in enumerate(samples)
                   if "gt_bboxes" not in s]
        raise DataError(f"some samples of a batch have gt_bboxes and some do not: {missing}")
    boxes = [torch.as_tensor(s["gt_bboxes"], dtype=torch.float32).reshape(-1, 4) for s in samples]
    labels = [torch.as_tensor(s["gt_labels"], dtype=torch.long).reshape(-1) for s in samples]
    ignore = [torch.as_tensor(s.get("gt_bboxes_ignore", torch.zeros(0, 4)),
                              dtype=torch.float32).reshape(-1, 4) for s in samples]
    for b, lab, s in zip(boxes, labels, samples):
        if b.shape[0] != lab.shape[0]:
            raise DataError(f"{s.get('img_metas', {}).get('filename', '<unknown image>')}: "
                            f"{b.shape[0]} gt_bboxes but {lab.shape[0]} gt_labels")
    masks = _masks(samples, boxes)
    return DetTargets.from_lists(boxes, labels, ignore, masks=masks, mask_shape=pad_shape)


def _masks(samples: list[dict[str, Any]], boxes: list[torch.Tensor]) -> list[torch.Tensor] | None:
    """Each sample's (G_i, h_i, w_i) uint8 ``gt_masks``; None when no sample has them."""
    with_masks = ["gt_masks" in s for s in samples]
    if not any(with_masks):
        return None
    if not all(with_masks):
        missing = [s.get("img_metas", {}).get("filename", i) for i, s in enumerate(samples)
                   if "gt_masks" not in s]
        raise DataError(f"some samples of a batch have gt_masks and some do not: {missing}")
    masks = []
    for s, b in zip(samples, boxes):
        m = s["gt_masks"]
        if not isinstance(m, torch.Tensor) or m.ndim != 3 or m.shape[0] != b.shape[0]:
            name = s.get("img_metas", {}).get("filename", "<unknown image>")
            shape = tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__
            raise DataError(f"{name}: gt_masks must be a ({b.shape[0]}, h, w) uint8 tensor, one "
                            f"mask per gt_bboxes row; got {shape}",
                            hint="DefaultFormatBundle turns the mask structure into that tensor")
        masks.append(m)
    return masks


def collate(samples: list[dict[str, Any]]) -> tuple[ImageBatch, DetTargets | None]:
    """The data contract's collate: (padded ImageBatch, padded DetTargets or None)."""
    if not samples:
        raise DataError("cannot collate an empty batch")
    if any(s is None for s in samples):
        raise DataError("a sample is None: the pipeline rejected an image (e.g. RandomCrop left "
                        "no GT) and the dataset did not draw another")
    if "views" in samples[0]:
        raise DataError("these samples are MultiScaleFlipAug views",
                        hint="use detcli.data.collate.collate_views for test-time augmentation")
    images = collate_images(samples)
    return images, collate_targets(samples, images.pad_shape)


def collate_views(samples: list[dict[str, Any]]) -> list[ImageBatch]:
    """MultiScaleFlipAug samples ``{"views": [V samples]}`` -> V ImageBatches of N images.

    Batch ``v`` holds view ``v`` of every image (same scale and flip for all of them), each
    image's metas carrying that view's ``scale_factor``, ``flip`` and ``flip_direction``.
    """
    if not samples or any(s is None or "views" not in s for s in samples):
        raise DataError("collate_views takes samples of MultiScaleFlipAug ({'views': [...]})",
                        hint="use detcli.data.collate.collate for ordinary samples")
    num_views = {len(s["views"]) for s in samples}
    if len(num_views) != 1:
        raise DataError(f"samples of one batch have different numbers of views: {sorted(num_views)}")
    return [collate_images([s["views"][v] for s in samples]) for v in range(num_views.pop())]
