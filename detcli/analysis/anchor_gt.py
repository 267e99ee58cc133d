"""A dataset's GT boxes in network-input pixels, flat and in padded batches for the assigner.

I images, T GT boxes over all of them, Q ignore boxes over all of them; a batch holds n images
of one padded shape, G GT slots and J ignore slots per image (padding: label -1, gt_id -1).
Boxes are (x1, y1, x2, y2); ``*_ori`` in original-image pixels, the others in network-input
pixels (after the test-size Resize, see :mod:`detcli.analysis.pipeline_geometry`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from detcli.analysis.pipeline_geometry import PipelineGeometry, network_input_geometry
from detcli.data.build import build_dataset
from detcli.errors import DataError

MAX_IOU_ELEMENTS = 1 << 24  # entries of one batch's (n, G, R) IoU matrix: 64 MiB in float32

log = logging.getLogger(__name__)


@dataclass
class GTSet:
    """Every GT box of the analysed images."""

    boxes: np.ndarray  # (T, 4) float32, network-input pixels
    boxes_ori: np.ndarray  # (T, 4) float32, original pixels
    labels: np.ndarray  # (T,) int64 in [0, K)
    image: np.ndarray  # (T,) int64 index into the images below
    ignore_boxes: np.ndarray  # (Q, 4) float32, network-input pixels
    ignore_image: np.ndarray  # (Q,) int64
    img_shape: np.ndarray  # (I, 2) int64 (h, w) after resize
    pad_shape: np.ndarray  # (I, 2) int64 (h, w) after padding
    files: list[str]  # I image file names, as in the annotation file
    image_ids: list[int]  # I
    classes: tuple[str, ...]

    @property
    def num_images(self) -> int:
        return len(self.files)

    @property
    def wh(self) -> np.ndarray:
        """(T, 2) width and height in network-input pixels."""
        return self.boxes[:, 2:] - self.boxes[:, :2]

    @property
    def area(self) -> np.ndarray:
        """(T,) area in network-input pixels."""
        wh = self.wh
        return wh[:, 0] * wh[:, 1]


def collect_gt(dataset: object, geometry: PipelineGeometry,
               max_images: Optional[int] = None) -> GTSet:
    """The GT of the first ``max_images`` images of ``dataset`` (a DetDataset), through
    ``geometry``. Only annotations and image sizes are read; no image is decoded."""
    infos = dataset.img_infos  # type: ignore[attr-defined]
    count = len(infos) if max_images is None else min(max_images, len(infos))
    anns = [dataset.get_ann_info(i) for i in range(count)]  # type: ignore[attr-defined]
    heights = np.array([infos[i]["height"] for i in range(count)], dtype=np.int64)  # (I,)
    widths = np.array([infos[i]["width"] for i in range(count)], dtype=np.int64)  # (I,)
    img_shape, pad_shape, factors = geometry.shapes(heights, widths)

    def flat(key: str) -> tuple[np.ndarray, np.ndarray]:
        boxes = [a[key].reshape(-1, 4) for a in anns]
        image = np.repeat(np.arange(count, dtype=np.int64), [len(b) for b in boxes])  # (T,)
        stacked = np.concatenate(boxes, axis=0) if boxes else np.zeros((0, 4), np.float32)
        return stacked.astype(np.float32), image

    boxes_ori, image = flat("bboxes")
    ignore_ori, ignore_image = flat("bboxes_ignore")
    labels = (np.concatenate([a["labels"] for a in anns]) if anns else np.zeros(0)).astype(np.int64)
    return GTSet(
        boxes=geometry.boxes(boxes_ori, image, factors, img_shape), boxes_ori=boxes_ori,
        labels=labels, image=image,
        ignore_boxes=geometry.boxes(ignore_ori, ignore_image, factors, img_shape),
        ignore_image=ignore_image, img_shape=img_shape, pad_shape=pad_shape,
        files=[infos[i]["file_name"] for i in range(count)],
        image_ids=[int(infos[i]["id"]) for i in range(count)],
        classes=tuple(dataset.CLASSES),  # type: ignore[attr-defined]
    )


@dataclass
class SplitGT:
    """A split's GT in network-input pixels and the dataset it came from."""

    geometry: PipelineGeometry
    gts: GTSet
    type: str  # the dataset config's type
    source: str  # its annotation file
    num_images: int  # in the dataset (the analysed ones: ``gts.num_images``)


def split_gt(cfg: Any, split: str, max_images: Optional[int] = None) -> SplitGT:
    """``data.<split>``'s GT of the first ``max_images`` images through the test-size geometry
    (what ``det analyze anchors`` reads); DataError for a missing split, a bad
    ``max_images`` or no GT box."""
    dataset_cfg = cfg.data.split(split)
    if dataset_cfg is None:
        raise DataError(f"the config has no dataset under data.{split}",
                        hint="choose another --split, or set data.{split}")
    if max_images is not None and max_images < 1:
        raise DataError(f"--max-images must be >= 1, got {max_images}")
    dataset = build_dataset(dataset_cfg, on_bad=cfg.data.on_bad_image)
    geometry = network_input_geometry(cfg.data, split)
    for note in geometry.notes:
        log.warning("%s", note)
    gts = collect_gt(dataset, geometry, max_images)
    if len(gts.labels) == 0:
        raise DataError(f"{dataset.source}: the {gts.num_images} analysed images of "
                        f"data.{split} hold no GT box; there is nothing to analyse")
    return SplitGT(geometry, gts, dataset_cfg.type, dataset.source, len(dataset))

@dataclass
class GTBatch:
    """n images of one padded shape, GT padded for one assigner call."""

    pad_shape: tuple[int, int]
    gt_boxes: Tensor  # (n, G, 4)
    gt_labels: Tensor  # (n, G) int64, -1 on padding
    gt_ids: Tensor  # (n, G) int64 index into the GTSet's T boxes, -1 on padding
    ignore_boxes: Tensor  # (n, J, 4)
    ignore_valid: Tensor  # (n, J) bool
    img_shapes: Tensor  # (n, 2) int64 (h, w)
    images: np.ndarray  # (n,) int64 index into the GTSet's images


def _slots(owner: np.ndarray, images: np.ndarray,
           num_images: int) -> tuple[np.ndarray, np.ndarray, int]:
    """For items (T,) owned by images, those in ``images`` (n,): (item ids, (row, column) of
    each in an (n, G) padded layout, G)."""
    row_of = np.full(num_images, -1, dtype=np.int64)  # (I,) image -> row in the batch
    row_of[images] = np.arange(len(images))
    rows = row_of[owner]  # (T,) -1 outside the batch
    ids = np.flatnonzero(rows >= 0)  # (t,) ascending, so grouped by image in dataset order
    rows = rows[ids]
    order = np.argsort(rows, kind="stable")  # (t,)
    ids, rows = ids[order], rows[order]
    starts = np.searchsorted(rows, np.arange(len(images)))  # (n,) first item of each row
    cols = np.arange(len(ids)) - starts[rows]  # (t,)
    width = int(np.bincount(rows, minlength=len(images)).max(initial=0))
    return ids, np.stack([rows, cols]), width


def make_batches(gts: GTSet, priors_per_image: dict[tuple[int, int], int],
                 max_elements: int = MAX_IOU_ELEMENTS, device: str = "cpu") -> list[GTBatch]:
    """Group images by padded shape and cut each group so a batch's (n, G, R) IoU matrix stays
    under ``max_elements``. ``priors_per_image`` gives R for each padded shape."""
    batches = []
    gt_counts = np.bincount(gts.image, minlength=gts.num_images)  # (I,)
    shapes, group = np.unique(gts.pad_shape.reshape(-1, 2), axis=0, return_inverse=True)
    for k, (height, width) in enumerate(shapes.tolist()):
        members = np.flatnonzero(group.reshape(-1) == k)  # (m,) images of this padded shape
        per_image = max(int(gt_counts[members].max(initial=1)), 1) * priors_per_image[(height, width)]
        step = max(1, max_elements // per_image)
        for start in range(0, len(members), step):
            batches.append(_batch(gts, members[start:start + step], (height, width), device))
    return batches


def _batch(gts: GTSet, images: np.ndarray, shape: tuple[int, int], device: str) -> GTBatch:
    n = len(images)
    ids, (rows, cols), width = _slots(gts.image, images, gts.num_images)
    boxes = np.zeros((n, width, 4), np.float32)
    labels = np.full((n, width), -1, np.int64)
    gt_ids = np.full((n, width), -1, np.int64)
    boxes[rows, cols], labels[rows, cols], gt_ids[rows, cols] = gts.boxes[ids], gts.labels[ids], ids
    ign_ids, (ign_rows, ign_cols), ign_width = _slots(gts.ignore_image, images, gts.num_images)
    ignore = np.zeros((n, ign_width, 4), np.float32)
    ignore_valid = np.zeros((n, ign_width), bool)
    ignore[ign_rows, ign_cols], ignore_valid[ign_rows, ign_cols] = gts.ignore_boxes[ign_ids], True
    return GTBatch(
        pad_shape=shape,
        gt_boxes=torch.from_numpy(boxes).to(device),
        gt_labels=torch.from_numpy(labels).to(device),
        gt_ids=torch.from_numpy(gt_ids).to(device),
        ignore_boxes=torch.from_numpy(ignore).to(device),
        ignore_valid=torch.from_numpy(ignore_valid).to(device),
        img_shapes=torch.from_numpy(gts.img_shape[images]).to(device),
        images=images,
    )
