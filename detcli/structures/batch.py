"""What the data layer hands the model: a padded image batch and padded GT targets.

N images, G GT slots per image (the batch's largest GT count), I ignore-box slots.
Boxes are (x1, y1, x2, y2) in absolute pixels of the network input (after resize, flip and
pad) unless a name says otherwise. Labels are in [0, K) for the K foreground classes;
``-1`` marks an empty slot. Padding GT to one tensor keeps the train step free of per-image
Python loops: assigners and losses run on (N, ...) tensors at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor


@dataclass
class ImageBatch:
    """Normalised images, padded to one size, and how each maps back to its original."""

    tensor: Tensor  # (N, 3, H, W) float, normalised; H and W equal for the batch
    img_shapes: list[tuple[int, int]]  # (h, w) of each image after resize, before padding
    ori_shapes: list[tuple[int, int]]  # (h, w) of each image as read from disk
    scale_factors: Tensor  # (N, 4) float: (sx, sy, sx, sy), original -> network input
    metas: list[dict[str, Any]] = field(default_factory=list)  # file name, image id, flip, ...

    def __len__(self) -> int:
        return self.tensor.shape[0]

    @property
    def pad_shape(self) -> tuple[int, int]:
        return (self.tensor.shape[-2], self.tensor.shape[-1])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> ImageBatch:
        return replace(
            self,
            tensor=self.tensor.to(device, non_blocking=non_blocking),
            scale_factors=self.scale_factors.to(device, non_blocking=non_blocking),
        )

    def pin_memory(self) -> ImageBatch:
        """Page-locked copy; DataLoader(pin_memory=True) calls this on each batch."""
        return replace(self, tensor=self.tensor.pin_memory(),
                       scale_factors=self.scale_factors.pin_memory())

    @classmethod
    def from_tensor(cls, tensor: Tensor) -> ImageBatch:
        """A batch whose images are already network-sized (no resize, no padding)."""
        n, _, h, w = tensor.shape
        return cls(
            tensor=tensor,
            img_shapes=[(h, w)] * n,
            ori_shapes=[(h, w)] * n,
            scale_factors=torch.ones(n, 4, device=tensor.device),
            metas=[{} for _ in range(n)],
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
