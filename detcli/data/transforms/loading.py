"""The first two pipeline steps: read the image file, copy the annotations into the results dict.

H, W: image height and width as read (EXIF orientation applied); G GT boxes; I ignore boxes.

The dataset hands the pipeline ``results = {"img_info": {"id", "file_name", "filename",
"height", "width"}, "ann_info": {"bboxes", "labels", "bboxes_ignore", "masks", "ann_ids"},
"img_prefix", "image_id"}``; ``img_info["filename"]`` is the full path. ``ann_info["masks"]``
is a list of G COCO segmentations (polygons or RLE) or, for a format without masks, a
:class:`~detcli.data.datasets.base.NoMasks` saying why. Keys these steps add follow
MMDetection: ``filename``, ``ori_filename``, ``img`` (H, W, 3), ``img_shape``, ``ori_shape``,
``img_fields``; ``gt_bboxes`` (G, 4) float32, ``gt_labels`` (G,) int64 in [0, K),
``gt_bboxes_ignore`` (I, 4) float32 and ``bbox_fields`` (the keys geometric transforms move);
with ``with_mask``, ``gt_masks`` (G masks of the image's H x W:
:class:`~detcli.structures.masks.BitmapMasks`, or
:class:`~detcli.structures.masks.PolygonMasks` with ``poly2mask = false``) and
``mask_fields``.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import numpy as np

from detcli.config.schema import Schema
from detcli.data.masks_io import NoMasks, load_masks
from detcli.data.transforms.image_io import read_image
from detcli.errors import DataError
from detcli.registry import TRANSFORMS


class LoadImageFromFileConfig(Schema):
    type: Literal["LoadImageFromFile"] = "LoadImageFromFile"
    to_float32: bool = False
    color_type: Literal["color"] = "color"  # the only mode: the model takes 3 channels
    channel_order: Literal["bgr", "rgb"] = "bgr"


@TRANSFORMS.register(LoadImageFromFileConfig)
class LoadImageFromFile:
    """Decode ``results["img_info"]["filename"]`` into ``results["img"]`` (H, W, 3).

    uint8 BGR by default; grayscale and RGBA become 3-channel, 16-bit is scaled to 8-bit, EXIF
    orientation is applied (see :mod:`detcli.data.transforms.image_io`). A missing, unreadable
    or truncated file raises DataError naming it.
    """

    def __init__(self, *, to_float32: bool = False, color_type: str = "color",
                 channel_order: str = "bgr") -> None:
        self.to_float32 = to_float32
        self.color_type = color_type  # MMDetection's name; "color" is the only mode
        self.channel_order = channel_order

    def __repr__(self) -> str:
        return f"LoadImageFromFile(to_float32={self.to_float32}, channel_order={self.channel_order!r})"

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        filename, ori_filename = image_paths(results)
        img = read_image(filename, self.channel_order)  # (H, W, 3) uint8
        if self.to_float32:
            img = img.astype(np.float32)
        results["filename"] = filename
        results["ori_filename"] = ori_filename
        results["img"] = img
        results["img_shape"] = img.shape
        results["ori_shape"] = img.shape
        results["img_fields"] = ["img"]
        return results


def image_paths(results: dict[str, Any]) -> tuple[str, str]:
    """(full path, name as written in the annotation file) of the image ``results`` describes."""
    info = results.get("img_info")
    if not isinstance(info, dict):
        raise DataError(f"results dict has no 'img_info' (keys: {sorted(results)})")
    ori_filename = info.get("file_name") or info.get("filename")
    if not ori_filename:
        raise DataError(f"img_info has neither 'filename' nor 'file_name': {info}")
    filename = info.get("filename")
    if not filename:
        prefix = results.get("img_prefix") or ""
        filename = os.path.join(prefix, ori_filename)
    return str(filename), str(ori_filename)


class LoadAnnotationsConfig(Schema):
    type: Literal["LoadAnnotations"] = "LoadAnnotations"
    with_bbox: bool = True
    with_label: bool = True
    with_mask: bool = False  # instance masks as gt_masks (Mask R-CNN)
    poly2mask: bool = True  # polygons rasterised now (BitmapMasks); false: kept as PolygonMasks


@TRANSFORMS.register(LoadAnnotationsConfig)
class LoadAnnotations:
    """Copy ``results["ann_info"]`` into ``gt_bboxes`` / ``gt_labels`` / ``gt_bboxes_ignore``
    and, with ``with_mask``, read the instance masks into ``gt_masks``.

    Copies, so later transforms never change the dataset's own arrays. ``bbox_fields`` lists
    ``gt_bboxes`` and, when the annotation has them, ``gt_bboxes_ignore``.

    Masks follow MMDetection 3.3's ``LoadAnnotations(with_mask=True, poly2mask=True)``:
    polygons and RLE (uncompressed or compressed) decoded by pycocotools at the size of the
    image as loaded (``ori_shape``; ``img_info``'s size when no image was loaded). An instance whose mask is unusable (no polygon part of >= 3 points; an RLE
    with ``poly2mask = false``) becomes an ignore box, as MMDetection's ``ignore_flag``; an
    annotation without a ``segmentation``, an RLE of another size, or a dataset format without
    masks (VOC, YOLO box lines) is a DataError naming the file and annotation
    (:mod:`detcli.data.masks_io`).
    """

    def __init__(self, *, with_bbox: bool = True, with_label: bool = True,
                 with_mask: bool = False, poly2mask: bool = True) -> None:
        self.with_bbox = with_bbox
        self.with_label = with_label
        self.with_mask = with_mask
        self.poly2mask = poly2mask

    def __repr__(self) -> str:
        return (f"LoadAnnotations(with_bbox={self.with_bbox}, with_label={self.with_label}, "
                f"with_mask={self.with_mask}, poly2mask={self.poly2mask})")

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        ann = results.get("ann_info")
        if not isinstance(ann, dict):
            raise DataError(f"results dict has no 'ann_info' (keys: {sorted(results)})")
        fields = [f for f in results.get("bbox_fields", []) if f not in ("gt_bboxes", "gt_bboxes_ignore")]
        if self.with_bbox:
            results["gt_bboxes"] = _boxes(ann.get("bboxes"), "bboxes")  # (G, 4)
            fields.append("gt_bboxes")
            if ann.get("bboxes_ignore") is not None:
                results["gt_bboxes_ignore"] = _boxes(ann["bboxes_ignore"], "bboxes_ignore")  # (I, 4)
                fields.append("gt_bboxes_ignore")
        if self.with_label:
            labels = ann.get("labels")
            labels = np.zeros(0, np.int64) if labels is None else labels
            results["gt_labels"] = np.array(labels, dtype=np.int64).reshape(-1)  # (G,)
        results["bbox_fields"] = fields
        if self.with_mask:
            self._load_masks(results, ann)
        return results

    def _load_masks(self, results: dict[str, Any], ann: dict[str, Any]) -> None:
        """``gt_masks`` (G masks) and ``mask_fields``; unusable masks move their boxes to the
        ignore boxes (class docstring)."""
        masks = ann.get("masks")
        if isinstance(masks, NoMasks):
            raise DataError(masks.reason, hint="instance masks come from a COCO file's "
                            "`segmentation` or from YOLO polygon label lines")
        if masks is None:
            raise DataError("ann_info has no 'masks': the dataset did not provide segmentations",
                            hint="build the results with the dataset (DetDataset.prepare)")
        height, width = _mask_size(results)
        loaded = load_masks(masks, height, width, self.poly2mask, ann.get("ann_ids"),
                            ann.get("source", "the annotation file"))
        results["gt_masks"] = loaded.masks[loaded.usable]
        results["mask_fields"] = ["gt_masks"]
        if loaded.usable.all() or not self.with_bbox:
            return
        dropped = results["gt_bboxes"][~loaded.usable]  # (D, 4)
        results["gt_bboxes"] = results["gt_bboxes"][loaded.usable]
        if "gt_labels" in results:
            results["gt_labels"] = results["gt_labels"][loaded.usable]
        ignore = results.get("gt_bboxes_ignore", np.zeros((0, 4), np.float32))
        results["gt_bboxes_ignore"] = np.concatenate([ignore, dropped]).astype(np.float32)
        if "gt_bboxes_ignore" not in results["bbox_fields"]:
            results["bbox_fields"].append("gt_bboxes_ignore")


def _mask_size(results: dict[str, Any]) -> tuple[int, int]:
    """(h, w) the masks take: the decoded image's (``ori_shape``, as MMDetection 3.3), or the
    annotation's when no image was loaded."""
    shape = results.get("ori_shape")
    if shape is not None:
        return int(shape[0]), int(shape[1])
    info = results["img_info"]
    return int(info["height"]), int(info["width"])


def _boxes(boxes: Any, key: str) -> np.ndarray:
    """A float32 (B, 4) copy of ``boxes``; None and empty lists give (0, 4)."""
    if boxes is None:
        return np.zeros((0, 4), np.float32)
    out = np.array(boxes, dtype=np.float32)
    if out.size == 0:
        return out.reshape(0, 4)
    if out.ndim != 2 or out.shape[1] != 4:
        raise DataError(f"ann_info[{key!r}] must have shape (B, 4), got {out.shape}")
    return out
