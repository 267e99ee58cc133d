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
    """GT for a batch, padded to G boxes and I ignore boxes per image."""

    boxes: Tensor  # (N, G, 4) float
    labels: Tensor  # (N, G) int64, -1 on padding slots
    ignore_boxes: Tensor  # (N, I, 4) float, e.g. COCO iscrowd regions
    ignore_valid: Tensor  # (N, I) bool, False on padding slots

    @property
    def valid(self) -> Tensor:
        return self.labels >= 0  # (N, G)

    @property
    def num_gts(self) -> Tensor:
        return self.valid.sum(dim=1)  # (N,)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> DetTargets:
        return DetTargets(*(t.to(device, non_blocking=non_blocking) for t in
                            (self.boxes, self.labels, self.ignore_boxes, self.ignore_valid)))

    def pin_memory(self) -> DetTargets:
        """Page-locked copy; DataLoader(pin_memory=True) calls this on each batch."""
        return DetTargets(*(t.pin_memory() for t in
                            (self.boxes, self.labels, self.ignore_boxes, self.ignore_valid)))

    @classmethod
    def from_lists(
        cls,
        boxes: list[Tensor],
        labels: list[Tensor],
        ignore_boxes: list[Tensor] | None = None,
    ) -> DetTargets:
        """Pad per-image (G_i, 4) boxes and (G_i,) labels into one batch."""
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
        return cls(out_boxes, out_labels, out_ign, out_ign_valid)
