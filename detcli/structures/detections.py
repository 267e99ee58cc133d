"""Detector outputs.  N images, M detection slots per image.

``DetectionBatch`` is the padded form the model and the ONNX graph produce (fixed M, a valid
count per image); ``Detections`` is one image's kept detections. Boxes are (x1, y1, x2, y2) in
pixels of the original image.

Instance segmentation (Mask R-CNN) adds, per detection, ``DetectionBatch.mask_probs``: the
h x w (28 x 28) probability mask of its class over its box, as the network predicts it (and an
exported graph returns it), and ``Detections.masks``: that mask pasted into the image and
thresholded, (D, H, W) bool at the image's size (the detector's ``predict`` does the pasting,
:mod:`detcli.models.roi_heads.mask_paste`). Both are None for a box-only detector.

Bitmaps are for one image at a time: whatever keeps detections of many images (the tester, over
a validation set; ``det predict``) keeps ``Detections.mask_rles`` instead, the masks in COCO
RLE (:mod:`detcli.structures.mask_rle`), made by :meth:`Detections.with_encoded_masks`, which
drops the bitmaps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from detcli.structures.mask_rle import MaskRLE, encode_masks


@dataclass
class Detections:
    boxes: Tensor  # (D, 4) float
    scores: Tensor  # (D,) float, after sigmoid/softmax, descending
    labels: Tensor  # (D,) int64 in [0, K)
    masks: Tensor | None = None  # (D, H, W) bool at the image's size; None: boxes only
    mask_rles: list[MaskRLE] | None = None  # D: the masks as RLE, in place of ``masks``

    def __len__(self) -> int:
        return self.boxes.shape[0]

    @property
    def has_masks(self) -> bool:
        """Whether the detections carry masks (as bitmaps or as RLE)."""
        return self.masks is not None or self.mask_rles is not None

    def to(self, device: torch.device | str) -> Detections:
        masks = None if self.masks is None else self.masks.to(device)
        return Detections(self.boxes.to(device), self.scores.to(device), self.labels.to(device),
                          masks, self.mask_rles)

    def encoded_masks(self) -> list[MaskRLE] | None:
        """The D masks as RLE (encoded now when held as bitmaps); None without masks."""
        if self.mask_rles is not None:
            return self.mask_rles
        return None if self.masks is None else encode_masks(self.masks)

    def with_encoded_masks(self) -> Detections:
        """These detections with their masks as RLE and no bitmaps (the same object when
        there are no bitmaps to encode)."""
        if self.masks is None:
            return self
        return Detections(self.boxes, self.scores, self.labels, None, encode_masks(self.masks))

    def select(self, keep: Tensor) -> Detections:
        """The detections ``keep`` picks ((D,) bool, or indices), masks of either kind too."""
        masks = None if self.masks is None else self.masks[keep]
        rles = None
        if self.mask_rles is not None:
            picked = torch.arange(len(self))[keep.cpu()].tolist()
            rles = [self.mask_rles[k] for k in picked]
        return Detections(self.boxes[keep], self.scores[keep], self.labels[keep], masks, rles)


@dataclass
class DetectionBatch:
    boxes: Tensor  # (N, M, 4) float; slots past num_dets are zero
    scores: Tensor  # (N, M) float; slots past num_dets are zero
    labels: Tensor  # (N, M) int64; slots past num_dets are -1
    num_dets: Tensor  # (N,) int64
    mask_probs: Tensor | None = None  # (N, M, h, w) float in [0, 1]; zero past num_dets

    def unbind(self) -> list[Detections]:
        """One :class:`Detections` per image (boxes, scores, labels; masks need pasting, see
        the module docstring)."""
        counts = self.num_dets.tolist()
        return [
            Detections(self.boxes[i, :c], self.scores[i, :c], self.labels[i, :c])
            for i, c in enumerate(counts)
        ]
