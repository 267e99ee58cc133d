"""What the data layer hands the model: a padded image batch and padded GT targets.

N images, G GT slots per image (the batch's largest GT count), I ignore-box slots.
Boxes are (x1, y1, x2, y2) in absolute pixels of the network input (after resize, flip and
pad) unless a name says otherwise. Labels are in [0, K) for the K foreground classes;
``-1`` marks an empty slot. Padding GT to one tensor keeps the train step free of per-image
Python loops: assigners and losses run on (N, ...) tensors at once.

Everything the model reads per image is a tensor made once per batch (in the collate, in the
loader's workers) and moved to the device with the images: ``img_shapes`` and ``pad_shapes``
(N, 2), ``scale_factors`` (N, 4). A head never turns a Python list into a tensor inside the
step (on CUDA that is a host-to-device copy that waits for the stream; docs/performance.md).
``ori_shapes`` and ``metas`` stay host data for the code that runs on the host (evaluation,
drawing, export checks).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence, Union

import torch
from torch import Tensor

from detcli.errors import DataError


Shapes = Union[Tensor, Sequence[Sequence[int]]]


def _shape_tensor(shapes: Shapes, num_images: int, what: str) -> Tensor:
    """(h, w) per image as an (N, 2) int64 tensor; a list of (h, w[, c]) tuples is accepted."""
    if isinstance(shapes, Tensor):
        out = shapes.long()
    else:
        out = torch.tensor([tuple(s)[:2] for s in shapes], dtype=torch.long).reshape(-1, 2)
    if out.shape != (num_images, 2):
        raise DataError(f"ImageBatch.{what} must hold one (h, w) per image: expected "
                         f"({num_images}, 2), got {tuple(out.shape)}")
    return out


@dataclass
class ImageBatch:
    """Normalised images, padded to one size, and how each maps back to its original.

    ``img_shapes`` and ``pad_shapes`` may be given as lists of (h, w) tuples; they are kept as
    (N, 2) int64 tensors. ``pad_shapes`` defaults to each image's ``metas[i]["pad_shape"]``
    when the pipeline recorded it, else the batch's padded size. ``fills_batch`` (host data,
    decided once at construction) says whether every image's own padded size is the batch's,
    so a head can skip per-image valid flags without reading ``pad_shapes`` back.
    """

    tensor: Tensor  # (N, 3, H, W) float, normalised; H and W equal for the batch
    img_shapes: Tensor  # (N, 2) int64 (h, w) of each image after resize, before padding
    ori_shapes: list[tuple[int, int]]  # (h, w) of each image as read from disk (host data)
    scale_factors: Tensor  # (N, 4) float: (sx, sy, sx, sy), original -> network input
    metas: list[dict[str, Any]] = field(default_factory=list)  # file name, image id, flip, ...
    pad_shapes: Tensor = None  # type: ignore[assignment]  # (N, 2) int64 (h, w) after its own Pad
    fills_batch: bool = None  # type: ignore[assignment]  # every pad_shapes row == pad_shape

    def __post_init__(self) -> None:
        num_images = self.tensor.shape[0]
        self.img_shapes = _shape_tensor(self.img_shapes, num_images, "img_shapes")
        if self.pad_shapes is None:
            batch = self.pad_shape
            self.pad_shapes = [tuple(m.get("pad_shape", batch))[:2] for m in self.metas] \
                if self.metas else [batch] * num_images
        if self.fills_batch is None:
            # a host list, or a CPU tensor, is read for free; a device tensor is not read
            pads = self.pad_shapes
            if isinstance(pads, Tensor):
                pads = pads.tolist() if pads.device.type == "cpu" else [None]
            self.fills_batch = all(p is not None and tuple(p) == self.pad_shape for p in pads)
        self.pad_shapes = _shape_tensor(self.pad_shapes, num_images, "pad_shapes")

    def __len__(self) -> int:
        return self.tensor.shape[0]

    @property
    def pad_shape(self) -> tuple[int, int]:
        """(H, W) of the batch tensor: every image is padded to it."""
        return (self.tensor.shape[-2], self.tensor.shape[-1])

    def img_shape_list(self) -> list[tuple[int, int]]:
        """Host view of ``img_shapes`` for host code (drawing, export checks); it reads the
        tensor back, so nothing in the train step calls it."""
        return [(int(h), int(w)) for h, w in self.img_shapes.tolist()]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> ImageBatch:
        return replace(
            self,
            tensor=self.tensor.to(device, non_blocking=non_blocking),
            img_shapes=self.img_shapes.to(device, non_blocking=non_blocking),
            pad_shapes=self.pad_shapes.to(device, non_blocking=non_blocking),
            scale_factors=self.scale_factors.to(device, non_blocking=non_blocking),
        )

    def pin_memory(self) -> ImageBatch:
        """Page-locked copy; DataLoader(pin_memory=True) calls this on each batch."""
        return replace(self, tensor=self.tensor.pin_memory(),
                       img_shapes=self.img_shapes.pin_memory(),
                       pad_shapes=self.pad_shapes.pin_memory(),
                       scale_factors=self.scale_factors.pin_memory())

    @classmethod
    def from_tensor(cls, tensor: Tensor) -> ImageBatch:
        """A batch whose images are already network-sized (no resize, no padding)."""
        n, _, h, w = tensor.shape
        shapes = torch.tensor([[h, w]] * n, device=tensor.device)  # (N, 2)
        return cls(
            tensor=tensor,
            img_shapes=shapes,
            ori_shapes=[(h, w)] * n,
            scale_factors=torch.ones(n, 4, device=tensor.device),
            metas=[{} for _ in range(n)],
            pad_shapes=shapes,
        )


@dataclass
class DetTargets:
    """GT for a batch, padded to G boxes and I ignore boxes per image.

    ``masks`` (instance segmentation only) is (N, G, H, W) uint8 in {0, 1}, aligned with the
    box slots (``masks[n, g]`` is the mask of ``boxes[n, g]``; padding slots are all zero) and
    padded to the batch's padded image size (H, W) = ``ImageBatch.pad_shape``, top-left
    aligned like the images. It is set only when the pipeline loads masks
    (``LoadAnnotations(with_mask=True)``); otherwise None and nothing else changes.
    """

    boxes: Tensor  # (N, G, 4) float
    labels: Tensor  # (N, G) int64, -1 on padding slots
    ignore_boxes: Tensor  # (N, I, 4) float, e.g. COCO iscrowd regions
    ignore_valid: Tensor  # (N, I) bool, False on padding slots
    masks: Tensor | None = None  # (N, G, H, W) uint8, zero on padding slots; None: no masks

    @property
    def valid(self) -> Tensor:
        return self.labels >= 0  # (N, G)

    @property
    def num_gts(self) -> Tensor:
        return self.valid.sum(dim=1)  # (N,)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> DetTargets:
        masks = None if self.masks is None else self.masks.to(device, non_blocking=non_blocking)
        return DetTargets(*(t.to(device, non_blocking=non_blocking) for t in
                            (self.boxes, self.labels, self.ignore_boxes, self.ignore_valid)),
                          masks=masks)

    def pin_memory(self) -> DetTargets:
        """Page-locked copy; DataLoader(pin_memory=True) calls this on each batch."""
        masks = None if self.masks is None else self.masks.pin_memory()
        return DetTargets(*(t.pin_memory() for t in
                            (self.boxes, self.labels, self.ignore_boxes, self.ignore_valid)),
                          masks=masks)

    @classmethod
    def from_lists(
        cls,
        boxes: list[Tensor],
        labels: list[Tensor],
        ignore_boxes: list[Tensor] | None = None,
        masks: list[Tensor] | None = None,
        mask_shape: tuple[int, int] | None = None,
    ) -> DetTargets:
        """Pad per-image (G_i, 4) boxes and (G_i,) labels into one batch.

        ``masks``, when given, holds one (G_i, h_i, w_i) uint8 tensor per image (the bitmaps
        of its G_i boxes, in the same order); they are copied top-left into an
        (N, G, H, W) zero tensor, (H, W) = ``mask_shape`` (the batch's padded image size),
        else the largest (h_i, w_i).
        """
        n = len(boxes)
        device = boxes[0].device if n else torch.device("cpu")
        ignore_boxes = ignore_boxes if ignore_boxes is not None else [
            torch.zeros(0, 4, device=device) for _ in range(n)]
        g = max([b.shape[0] for b in boxes], default=0)
        i = max([b.shape[0] for b in ignore_boxes], default=0)
        out_boxes = torch.zeros(n, g, 4, device=device)
        out_labels = torch.full((n, g), -1, dtype=torch.long, device=device)
        out_ign = torch.zeros(n, i, 4, device=device)
        out_ign_valid = torch.zeros(n, i, dtype=torch.bool, device=device)
        for k in range(n):
            out_boxes[k, : boxes[k].shape[0]] = boxes[k]
            out_labels[k, : labels[k].shape[0]] = labels[k]
            out_ign[k, : ignore_boxes[k].shape[0]] = ignore_boxes[k]
            out_ign_valid[k, : ignore_boxes[k].shape[0]] = True
        out_masks = None if masks is None else _pad_masks(masks, boxes, g, mask_shape, device)
        return cls(out_boxes, out_labels, out_ign, out_ign_valid, masks=out_masks)


def _pad_masks(masks: list[Tensor], boxes: list[Tensor], g: int,
               mask_shape: tuple[int, int] | None, device: torch.device) -> Tensor:
    """Per-image (G_i, h_i, w_i) masks -> (N, G, H, W) uint8, zero on padding slots/pixels."""
    if len(masks) != len(boxes):
        raise DataError(f"DetTargets.from_lists: {len(masks)} mask tensors for "
                        f"{len(boxes)} images")
    for k, (m, b) in enumerate(zip(masks, boxes)):
        if m.ndim != 3 or m.shape[0] != b.shape[0]:
            raise DataError(f"DetTargets.from_lists: image {k} has {b.shape[0]} boxes but masks "
                            f"of shape {tuple(m.shape)} (expected ({b.shape[0]}, h, w))")
    if mask_shape is None:
        mask_shape = (max([m.shape[1] for m in masks], default=0),
                      max([m.shape[2] for m in masks], default=0))
    h, w = mask_shape
    out = torch.zeros(len(masks), g, h, w, dtype=torch.uint8, device=device)
    for k, m in enumerate(masks):
        if m.shape[1] > h or m.shape[2] > w:
            raise DataError(f"DetTargets.from_lists: image {k}'s masks are "
                            f"{tuple(m.shape[1:])}, larger than the batch's ({h}, {w})")
        out[k, : m.shape[0], : m.shape[1], : m.shape[2]] = m.to(device=device, dtype=torch.uint8)
    return out
